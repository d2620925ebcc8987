"""Reproduce stage ``core``: the shared training loop on a real bundled dataset.

An MLP on scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), trained with AdamW
through :func:`qhybrid.train.train` with a cosine schedule, periodic evaluation and checkpoints.
It shows the loop works end to end and gives a reference for the parts' own stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Lt
from torch import nn

from qhybrid.config import check_fields
from qhybrid.report import Section
from qhybrid.runs import Run
from qhybrid.train import TrainConfig, make_loader, seed_everything, train

TITLE = "Core: shared training loop on digits"


@dataclass(frozen=True)
class StageConfig:
    hidden: Annotated[int, Ge(1)] = 64  # MLP hidden width
    batch_size: Annotated[int, Ge(1)] = 64  # examples per step
    steps: Annotated[int, Ge(1)] = (
        300  # optimizer steps (about 13 epochs of the 1,437 training images)
    )
    lr: Annotated[float, Gt(0)] = 3e-3  # AdamW peak learning rate
    test_fraction: Annotated[float, Gt(0), Lt(1)] = 0.2  # held-out share of the 1,797 images

    def __post_init__(self) -> None:
        check_fields(self)


def digits_tensors(test_fraction: float, seed: int) -> tuple[torch.utils.data.TensorDataset, ...]:
    """Standardised digits as (train, test) TensorDatasets, split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )

    def ds(a: Any, b: Any) -> torch.utils.data.TensorDataset:
        # Pixels are 0..16; a fixed scale (not per-pixel statistics, which are 0 for border pixels).
        return torch.utils.data.TensorDataset(
            torch.tensor(a / 16.0, dtype=torch.float32), torch.tensor(b, dtype=torch.long)
        )

    return ds(x_tr, y_tr), ds(x_te, y_te)


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_ds, test_ds = digits_tensors(config.test_fraction, seed)
    x_te, y_te = test_ds.tensors
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(64, config.hidden), nn.GELU(), nn.Linear(config.hidden, 10))

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        logits = m(x_te)
        return {
            "test_loss": float(nn.functional.cross_entropy(logits, y_te)),
            "test_acc": float((logits.argmax(-1) == y_te).float().mean()),
        }

    cfg = TrainConfig(
        max_steps=config.steps,
        lr_schedule="cosine",
        warmup_steps=10,
        eval_every=50,
        log_every=10,
        seed=seed,
        device="cpu",
    )
    result = train(
        model,
        make_loader(train_ds, config.batch_size, seed=seed),
        loss_fn,
        torch.optim.AdamW(model.parameters(), lr=config.lr),
        cfg,
        eval_fn=eval_fn,
        checkpoint_dir=run.artefact("core", "checkpoints"),
        metrics_path=run.artefact("core", "metrics.jsonl"),
    )
    evals = [r for r in result.history if "test_acc" in r]
    losses = [r for r in result.history if "loss" in r]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot([r["step"] for r in losses], [r["loss"] for r in losses], label="train")
    ax[0].plot([r["step"] for r in evals], [r["test_loss"] for r in evals], "o-", label="test")
    ax[0].set(xlabel="step", ylabel="cross-entropy", yscale="log")
    ax[0].legend()
    ax[1].plot([r["step"] for r in evals], [r["test_acc"] for r in evals], "o-")
    ax[1].set(xlabel="step", ylabel="test accuracy")
    section = Section(
        TITLE,
        text=(
            f"MLP 64-{config.hidden}-10 on scikit-learn digits ({len(train_ds)} train / "
            f"{len(test_ds)} test images), AdamW lr {config.lr}, cosine schedule, "
            f"{result.step} steps in {result.wall_time_s:.1f} s."
        ),
    )
    section.add_table(
        "Result",
        [
            {
                "steps": result.step,
                "epochs": result.epoch,
                "final train loss": result.loss,
                "test loss": result.last_eval["test_loss"],
                "test accuracy": result.last_eval["test_acc"],
                "wall time (s)": result.wall_time_s,
            }
        ],
    )
    section.add_figure(
        "Training curves of the core stage", run.save_figure(fig, "figures/core_curves")
    )
    section.headline = f"test accuracy {result.last_eval['test_acc']:.3f} after {result.step} steps"
    context["core"] = {"test_acc": result.last_eval["test_acc"]}
    return section
