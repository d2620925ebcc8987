"""``qhybrid llm train``: build data and a model, train through :func:`qhybrid.train.train`, save.

The run folder gets ``splits.json`` (the problems of every split, written first), and per seed
``checkpoints-seed<S>/`` (the loop's resumable checkpoints), ``metrics-seed<S>.jsonl`` and
``model-seed<S>/`` (the final ``save_pretrained`` model and tokenizer, loadable with
``from_pretrained``, plus ``task.json``). ``train_run(..., resume=True)`` (``qhybrid llm train
--resume RUN``) keeps finished seeds and continues the others from their latest checkpoint.

Data: ``dataset`` names a ``qhybrid grover generate`` folder; empty, the ``data`` spec (the same
:class:`quantum.dataset.DatasetSpec`) is drawn in memory with :func:`quantum.dataset.draw_splits`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_sim.data import Batches, TaskFormat, collate, encode_example
from llm_sim.model import ModelConfig, build_model, count_parameters
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_json
from qhybrid.train import TrainConfig, TrainResult, seed_everything, train
from quantum.dataset import DatasetSpec, SplitSpec

logger = logging.getLogger(__name__)

__all__ = [
    "DATA",
    "LLMTrainConfig",
    "TrainedModel",
    "lm_loss",
    "load_splits",
    "read_splits",
    "train_model",
    "train_run",
]

STYLES = ("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal")
# The built-in splits: train on n <= 6 with up to 12 marked states (long flip sections without
# long bitstrings) and every oracle style, 60% at a non-optimal k (half from the test's relative
# positions {0, k*/2, k*+1, 2k*}, half uniform below 2 sqrt(N)); test_ood_n reaches 60 qubits,
# half at a non-optimal k.
DATA = DatasetSpec(
    renderings=("compact",),  # the model reads compact prompts; no circuit for 'diagonal' at n > 16
    oracle_styles=STYLES,
    train=SplitSpec(2, 6, 1, 12, 6000, off_optimal=0.6, k_draw="both"),
    test_id=SplitSpec(2, 6, 1, 12, 200),
    test_ood_n=SplitSpec(7, 60, 1, 6, 1080, off_optimal=0.5),
    test_ood_t=SplitSpec(5, 6, 13, 16, 100),
    test_ood_k=SplitSpec(2, 6, 1, 6, 200, off_optimal=1.0),
)


@dataclass(frozen=True)
class LLMTrainConfig:
    """``qhybrid llm train``: a from-scratch model on Grover problems."""

    name: str = "llm-train"  # run-folder prefix
    seeds: tuple[int, ...] = (0,)  # one model per seed (init, data order); benchmarks use 3
    dataset: str = ""  # a 'qhybrid grover generate' folder; "" = draw the data spec in memory
    data: DatasetSpec = DATA  # the splits when dataset is "" (a 'grover generate' spec)
    task: TaskFormat = field(default_factory=TaskFormat)  # prompt, answer and position ids
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(hidden_size=64, num_layers=2, intermediate_size=256)
    )
    steps: int = 1500  # optimizer steps
    batch_size: int = 32  # sequences per step
    pack: bool = True  # pack each batch's sequences into fewer rows: same loss, about 2x the speed
    autocast: str = "off"  # "bf16": forward in bfloat16 autocast (measured ~10% faster on CPU)
    lr: float = 3e-3  # AdamW peak learning rate (cosine decay, 5% warm-up)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    eval_every: int = 0  # steps between validation-loss checks (0 = at the end)
    checkpoint_every: int = 250  # steps between resumable checkpoints (0 = at the end only)
    log_every: int = 50  # steps between metric records and progress lines
    device: str = "auto"  # "auto", "cpu" or "cuda"

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise QHybridError(
                f"seeds={list(self.seeds)} must be a non-empty list of distinct ints"
            )
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise QHybridError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0 or self.lr > 1:  # also refuses NaN
            raise QHybridError(f"lr={self.lr} must lie in (0, 1]")
        if self.autocast not in ("off", "bf16"):
            raise QHybridError(f"autocast={self.autocast!r} must be 'off' or 'bf16'")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise QHybridError("eval_every and checkpoint_every must be >= 0 (0 = at the end)")


@dataclass
class TrainedModel:
    model: Any
    tokenizer: Any
    result: TrainResult | None  # None when a resumed run found the seed already finished
    path: Path  # save_pretrained folder
    n_params: int


def lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy on answer tokens (labels != -100), plus Mixtral's router aux loss.

    A packed batch (4-D block-diagonal ``attention_mask``, :func:`llm_sim.data.collate`) is fine for
    any model; for Mixtral the load-balancing loss is then taken over the real tokens (the mask's
    diagonal) here, since transformers' own computation expects a 2-D mask.
    """
    net = getattr(model, "module", model)
    if not hasattr(getattr(net, "config", None), "num_local_experts"):
        return model(**batch).loss, {}
    mask = batch["attention_mask"]
    if mask.ndim == 2:  # Mixtral: the load-balancing loss joins the objective
        out = model(**batch, output_router_logits=True)
        return out.loss, {"aux_loss": float(out.aux_loss.detach())}
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = net.model(**inputs, output_router_logits=True)
    logits = net.lm_head(out.last_hidden_state)
    loss = net.loss_function(logits, batch["labels"], net.config.vocab_size)
    tokens = mask[:, 0].diagonal(dim1=-2, dim2=-1)  # a real token attends to itself
    aux = load_balancing_loss_func(
        out.router_logits, net.num_experts, net.num_experts_per_tok, tokens
    )
    return loss + net.router_aux_loss_coef * aux, {"aux_loss": float(aux)}


def _problems_of_split(folder: Path) -> list[Any]:
    """Distinct problems of one split folder of a 'grover generate' dataset (record order)."""
    from quantum import GroverProblem

    out: dict[str, Any] = {}
    for path in sorted(folder.glob("shard-*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if r["problem_id"] not in out:
                    out[r["problem_id"]] = GroverProblem.from_dict(r)
            except (ValueError, KeyError, TypeError) as err:
                raise QHybridError(
                    f"{path}:{i + 1} is not a 'grover generate' record ({err}); regenerate the "
                    "dataset with 'qhybrid grover generate'"
                ) from None
    return list(out.values())


def load_splits(config: Any) -> dict[str, list[Any]]:
    """Problems per split: the ``dataset`` folder of ``config``, else its ``data`` spec drawn."""
    from quantum.dataset import draw_splits

    if not config.dataset:
        return draw_splits(config.data)
    root = Path(config.dataset)
    data = root / "data"
    splits = (
        {d.name: _problems_of_split(d) for d in sorted(data.iterdir()) if d.is_dir()}
        if data.is_dir()
        else {}
    )
    if not splits.get("train"):
        raise QHybridError(
            f"dataset={str(root)!r} has no data/train/shard-*.jsonl records; create it with "
            "'qhybrid grover generate --dataset-dir DIR' or leave dataset empty for the built-in "
            "splits"
        )
    return splits


def write_splits(path: Path, splits: dict[str, list[Any]]) -> None:
    atomic_write_json(path, {k: [p.to_dict() for p in v] for k, v in splits.items()})


def read_splits(path: str | Path) -> dict[str, list[Any]]:
    """The problems of a run's ``splits.json``."""
    from quantum import GroverProblem

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: [GroverProblem.from_dict(p) for p in v] for k, v in data.items()}


def train_run(
    config: LLMTrainConfig,
    out_dir: Path,
    *,
    splits: dict[str, list[Any]] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[TrainedModel]:
    """Train one model per seed into ``out_dir`` (splits shared by all seeds).

    With ``resume``, the splits come from ``out_dir/splits.json``, finished seeds are loaded, and
    the others continue from their latest checkpoint.
    """
    out_dir = Path(out_dir)
    if resume and (out_dir / "splits.json").is_file():
        splits = read_splits(out_dir / "splits.json")
    splits = splits if splits is not None else load_splits(config)
    write_splits(out_dir / "splits.json", splits)
    return [
        train_model(config, out_dir, seed=s, splits=splits, resume=resume, progress=progress)
        for s in config.seeds
    ]


def _finished(path: Path) -> TrainedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((path / "task.json").read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(path)
    return TrainedModel(model, AutoTokenizer.from_pretrained(path), None, path, meta["n_params"])


def train_model(
    config: LLMTrainConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    splits: dict[str, list[Any]],
    resume: bool = False,
    progress: bool = True,
) -> TrainedModel:
    """Train ``config.model`` on ``splits["train"]``; checkpoints and the model go under ``out_dir``."""
    from quantum import build_tokenizer

    out = Path(out_dir)
    path = out / f"model-seed{seed}"
    if resume and (path / "task.json").is_file():
        logger.info("seed %d already finished: %s", seed, path)
        return _finished(path)
    seed_everything(seed)
    tokenizer = build_tokenizer()
    task = config.task
    train_ex = [encode_example(p, tokenizer, task) for p in splits["train"]]
    val_ex = [encode_example(p, tokenizer, task) for p in splits.get("test_id", [])[:64]]
    batches = Batches(
        train_ex,
        config.batch_size,
        tokenizer.pad_token_id,
        task.positions,
        seed=seed,
        pack=config.pack,
    )
    val = [
        collate(val_ex[i : i + 32], tokenizer.pad_token_id, task.positions)
        for i in range(0, len(val_ex), 32)
    ]
    model = build_model(config.model, tokenizer)
    n_params = count_parameters(model)
    logger.info(
        "seed %d: %s with %d parameters, %d training problems",
        seed,
        config.model.arch,
        n_params,
        len(train_ex),
    )
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    decay = [p for p in model.parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        fused=True,  # fused: one kernel per step (CPU and CUDA)
    )

    def eval_fn(m: Any) -> dict[str, float]:
        if not val:
            return {}
        dev = next(m.parameters()).device
        losses = [float(m(**{k: v.to(dev) for k, v in b.items()}).loss) for b in val]
        return {"val_loss": sum(losses) / len(losses)}

    tcfg = TrainConfig(
        max_steps=config.steps,
        lr_schedule="cosine",
        warmup_steps=max(1, config.steps // 20),
        eval_every=config.eval_every,
        log_every=config.log_every,
        seed=seed,
        device=config.device,
        autocast="bf16" if config.autocast == "bf16" else "off",
        progress=progress,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=1,
    )
    result = train(
        model,
        batches,
        lm_loss,
        opt,
        tcfg,
        eval_fn=eval_fn,
        resume=resume,
        checkpoint_dir=out / f"checkpoints-seed{seed}",
        metrics_path=out / f"metrics-seed{seed}.jsonl",
    )
    logger.info("seed %d: %d steps in %.1f s", seed, result.step, result.wall_time_s)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {
        "task": asdict(task),
        "n_params": n_params,
        "seed": seed,
        "train_seconds": result.wall_time_s,
        "steps": result.step,
    }
    atomic_write_json(path / "task.json", meta)  # written last: the seed is finished
    return TrainedModel(model, tokenizer, result, path, n_params)
