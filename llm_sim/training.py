"""``qhybrid llm train``: build data and a model, train through :func:`qhybrid.train.train`, save.

The run folder gets ``checkpoints/`` (the loop's resumable checkpoints), ``model/`` (the final
``save_pretrained`` model and tokenizer, loadable with ``from_pretrained``), ``splits.json`` (the
problems of every split) and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_sim.data import (
    Problem,
    SplitSpec,
    TaskFormat,
    encode_all,
    length_batches,
    load_dataset_splits,
    load_tokenizer,
    make_splits,
)
from llm_sim.model import ModelConfig, build_model, count_parameters
from qhybrid.runs import atomic_write_json
from qhybrid.train import TrainConfig, TrainResult, seed_everything, train

logger = logging.getLogger(__name__)

__all__ = [
    "LLMTrainConfig",
    "TrainedModel",
    "load_splits",
    "lm_loss",
    "read_splits",
    "train_model",
    "train_run",
]


@dataclass(frozen=True)
class LLMTrainConfig:
    """``qhybrid llm train``: a from-scratch model on Grover problems."""

    name: str = "llm-train"  # run-folder prefix
    seeds: tuple[int, ...] = (0, 1, 2)  # one model per training seed (init and data order)
    dataset: str = (
        ""  # a quantum.generate_dataset folder (train.jsonl, test_*.jsonl); "" = built-in splits
    )
    splits: SplitSpec = field(default_factory=SplitSpec)  # used when dataset is ""
    task: TaskFormat = field(default_factory=TaskFormat)  # prompt and answer format
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture and size
    steps: int = 1500  # optimizer steps
    batch_size: int = 64  # sequences per step
    lr: float = 2e-3  # AdamW peak learning rate (cosine decay, 5% warm-up)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    eval_every: int = 0  # steps between validation-loss checks (0 = at the end)
    device: str = "auto"  # "auto", "cpu" or "cuda"


@dataclass
class TrainedModel:
    model: Any
    tokenizer: Any
    result: TrainResult
    path: Path  # save_pretrained folder
    n_params: int
    splits: dict[str, list[Problem]]


def lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy on answer tokens (labels != -100), plus Mixtral's router aux loss."""
    config = getattr(getattr(model, "module", model), "config", None)
    if hasattr(
        config, "num_local_experts"
    ):  # Mixtral: add the load-balancing loss to the objective
        out = model(**batch, output_router_logits=True)
    else:
        out = model(**batch)
    extras = {}
    if getattr(out, "aux_loss", None) is not None:
        extras["aux_loss"] = float(out.aux_loss.detach())
    return out.loss, extras


def load_splits(config: LLMTrainConfig) -> dict[str, list[Problem]]:
    """Problems per split, from a quantum dataset folder or the built-in seeded generator."""
    if not config.dataset:
        return make_splits(config.splits)
    return load_dataset_splits(config.dataset)


def train_run(
    config: LLMTrainConfig, out_dir: Path, *, progress: bool = True
) -> list[TrainedModel]:
    """Train one model per seed into ``out_dir/model-seed<S>/`` (splits shared by all seeds)."""
    splits = load_splits(config)
    return [
        train_model(config, out_dir, seed=s, splits=splits, progress=progress) for s in config.seeds
    ]


def train_model(
    config: LLMTrainConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    splits: dict[str, list[Problem]] | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train ``config.model`` on the train split; checkpoints and the final model go under ``out_dir``."""
    seed_everything(seed)
    splits = splits if splits is not None else load_splits(config)
    tokenizer = load_tokenizer(config.task.fmt)
    train_ex = encode_all(splits["train"], tokenizer, config.task)
    val_ex = encode_all(splits.get("test_id", [])[:64], tokenizer, config.task)
    batches = length_batches(train_ex, config.batch_size, tokenizer.pad_token_id, seed=seed)
    val_batches = length_batches(val_ex, 64, tokenizer.pad_token_id) if val_ex else []
    model = build_model(config.model, tokenizer)
    n_params = count_parameters(model)
    logger.info(
        "model %s with %d parameters, %d training problems",
        config.model.arch,
        n_params,
        len(train_ex),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), fused=True,  # fused: one kernel per step (CPU and CUDA)
    )  # fmt: skip

    def eval_fn(m: Any) -> dict[str, float]:
        if not val_batches:
            return {}
        dev = next(m.parameters()).device
        losses = [float(m(**{k: v.to(dev) for k, v in b.items()}).loss) for b in val_batches]
        return {"val_loss": sum(losses) / len(losses)}

    tcfg = TrainConfig(
        max_steps=config.steps, lr_schedule="cosine", warmup_steps=max(1, config.steps // 20),
        eval_every=config.eval_every, log_every=max(1, min(50, config.steps // 10)), seed=seed,
        device=config.device, progress=progress, checkpoint_every=0, keep_checkpoints=1,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = train(model, batches, lm_loss, opt, tcfg, eval_fn=eval_fn,
                   checkpoint_dir=out / f"checkpoints-seed{seed}", metrics_path=out / f"metrics-seed{seed}.jsonl")  # fmt: skip
    logger.info("trained %d steps in %.1f s", result.step, time.perf_counter() - t0)
    path = out / f"model-seed{seed}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    atomic_write_json(
        path / "task.json",
        {
            "task": asdict(config.task),
            "n_params": n_params,
            "seed": seed,
            "train_seconds": result.wall_time_s,
            "steps": result.step,
        },
    )
    atomic_write_json(out / "splits.json", {k: [asdict(p) for p in v] for k, v in splits.items()})
    return TrainedModel(model, tokenizer, result, path, n_params, splits)


def read_splits(path: str | Path) -> dict[str, list[Problem]]:
    data = json.loads(Path(path).read_text())
    return {
        k: [Problem(p["n_qubits"], tuple(p["marked"]), p["iterations"]) for p in v]
        for k, v in data.items()
    }
