"""The one training loop of the toolkit, used by ``llm_sim``, ``newton``, ``pqc_fl`` and ``moe``.

A plain torch loop in the spirit of nanoGPT's ``train.py``: one function, :func:`train`, that takes a
model, a data iterable, a loss function and an optimizer, and does the rest:

1. deterministic seeding, CPU or CUDA, and PyTorch DDP when launched with ``torchrun``;
2. gradient accumulation over ``grad_accum_steps`` micro-batches and gradient-norm clipping;
3. a learning-rate schedule (constant, linear or cosine, with linear warm-up) applied to every param
   group as ``lr = initial_lr * factor(step)``;
4. closure-based second-order optimizers (``newton.QNewton``): when the optimizer sets
   ``requires_closure = True`` the loop calls ``optimizer.step(closure)`` with a :class:`Closure` that
   re-evaluates the loss on the step's micro-batches and exposes them for curvature products;
5. periodic evaluation, early stopping, metrics to ``metrics.jsonl``, a tqdm bar (off when not on a
   terminal);
6. checkpoints (safetensors weights, optimizer state, RNG states, loop position), written atomically;
   resuming gives the same weights as an uninterrupted run;
7. a guard that stops with :class:`~qhybrid.errors.NonFiniteLossError` as soon as the loss is NaN or
   infinite, before the bad step touches the weights, and keeps the last good checkpoint.

Data: ``data`` is any re-iterable (a list of batches, a ``DataLoader``); each pass over it is an
epoch. For shuffled data use :func:`make_loader`, whose ``DistributedSampler`` is re-seeded per epoch
(``seed + epoch``), so the order is a function of the seed and resuming can skip to the same batch.
Any ``data`` (or ``data.sampler``) with a ``set_epoch(epoch)`` method is told the epoch before each
pass, so data drawn afresh per epoch stays a function of the seed too.

Progress: a tqdm bar on a terminal; elsewhere (a log file, CI) a plain line on stderr every
``log_every`` steps and at least every 15 s.
Under DDP the same sampler gives each rank its shard of every global batch.

Example:
    >>> model = torch.nn.Linear(4, 1)
    >>> data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(4)]
    >>> loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> result = train(model, data, loss_fn, opt, TrainConfig(max_steps=8, progress=False))
    >>> result.step
    8
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.errors import NonFiniteLossError, QHybridError
from qhybrid.runs import atomic_write_json, atomic_write_text, read_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "Closure",
    "TrainConfig",
    "TrainResult",
    "clean_stale_checkpoints",
    "distillation_loss",
    "load_checkpoint",
    "lr_factor",
    "make_loader",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "train",
]

Batch = Any
LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]
LossFn = Callable[[nn.Module, Batch], LossOutput]
EvalFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`. Defaults suit a small model on a laptop CPU."""

    max_steps: int = 1000  # optimizer steps (each = grad_accum_steps micro-batches)
    max_epochs: int | None = None  # stop after this many passes over the data, if set
    grad_accum_steps: int = 1  # micro-batches whose gradients are summed into one step
    clip_grad_norm: float | None = 1.0  # max global L2 norm of the gradient; None = no clipping
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"  # decay after warm-up
    warmup_steps: int = 0  # steps of linear warm-up from 0 to the optimizer's lr
    min_lr_ratio: float = 0.1  # final lr / initial lr for the linear and cosine schedules
    eval_every: int = 0  # steps between calls of eval_fn; 0 = only at the end
    early_stop_metric: str | None = None  # eval_fn key watched for early stopping, e.g. "val_loss"
    early_stop_mode: Literal["min", "max"] = "min"  # whether smaller or larger is better
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    early_stop_min_delta: float = 0.0  # smallest change that counts as an improvement
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end (if a dir is set)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest ones)
    log_every: int = 10  # steps between metric records
    seed: int = 0  # seeds python, numpy and torch before the model's first step
    deterministic: bool = False  # torch.use_deterministic_algorithms: bitwise repeatable on GPU
    autocast: Literal["off", "bf16"] = (
        "off"  # forward in bfloat16 autocast (CPUs with AVX512-BF16, GPUs)
    )
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    progress: bool = True  # tqdm bar when on a terminal

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise QHybridError(f"max_steps={self.max_steps} must be >= 1")
        if self.grad_accum_steps < 1:
            raise QHybridError(f"grad_accum_steps={self.grad_accum_steps} must be >= 1")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise QHybridError(
                f"clip_grad_norm={self.clip_grad_norm} must be > 0 or None (no clipping)"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise QHybridError(f"min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise QHybridError(f"{name}={getattr(self, name)} must be >= 0")
        if self.keep_checkpoints < 1:
            raise QHybridError(f"keep_checkpoints={self.keep_checkpoints} must be >= 1")
        if self.log_every < 1:
            raise QHybridError(f"log_every={self.log_every} must be >= 1")
        if self.autocast not in ("off", "bf16"):
            raise QHybridError(f"autocast={self.autocast!r} must be 'off' or 'bf16'")
        if self.early_stop_patience and not self.early_stop_metric:
            raise QHybridError("early_stop_patience > 0 needs early_stop_metric, e.g. 'val_loss'")


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    step: int  # optimizer steps taken in total (including those before a resume)
    epoch: int  # completed passes over the data
    loss: float  # mean training loss of the last step
    history: list[dict[str, Any]] = field(default_factory=list)  # the metric records of this call
    last_eval: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None  # best value of early_stop_metric seen
    stopped_early: bool = False
    checkpoint: Path | None = None  # the newest checkpoint written
    wall_time_s: float = 0.0


# ----------------------------------------------------------------------------------------------
# Seeding, devices, data


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise checks the device exists."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise QHybridError(
            f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'auto'"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QHybridError(
            f"device {device!r} asked for, but CUDA is not available; use device='cpu'"
        )
    return dev


def make_loader(
    dataset: torch.utils.data.Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> torch.utils.data.DataLoader[Any]:
    """A ``DataLoader`` whose order depends only on ``seed`` and the epoch, sharded under DDP.

    ``batch_size`` is per process: under DDP with W ranks the global batch is ``W * batch_size``,
    and the union of the ranks' batches at step s equals the single-process batch s of size
    ``W * batch_size`` (``DistributedSampler`` deals indices round-robin from one permutation).
    """
    from torch.utils.data import DataLoader, DistributedSampler

    world, rank = _world()
    size = len(dataset)  # type: ignore[arg-type]
    if world > 1 and not drop_last and size % world:
        raise QHybridError(
            f"under torchrun with {world} ranks, a dataset of {size} examples does not split "
            f"evenly: DistributedSampler would repeat {-size % world} of them and the run would "
            f"differ from one process; pass drop_last=True or use a multiple of {world} examples"
        )
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    # A private generator: creating the iterator then draws no number from the global torch RNG,
    # so dropout randomness after a resume matches an uninterrupted run.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_fn,
        generator=generator,
    )


def _world() -> tuple[int, int]:
    """(world size, rank): from the process group, or from torchrun's variables before it exists."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1). Returns whether DDP is on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return True


def _mean_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / torch.distributed.get_world_size()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ----------------------------------------------------------------------------------------------
# Learning-rate schedule and losses


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the initial lr at optimizer step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``. Then with
    ``p = (step - warmup) / max(1, max_steps - warmup)`` in [0, 1] and ``r = min_lr_ratio``:
    linear ``1 - (1 - r) p``; cosine ``r + (1 - r) (1 + cos(pi p)) / 2``.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    p = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    r = config.min_lr_ratio
    if config.lr_schedule == "linear":
        return 1.0 - (1.0 - r) * p
    return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al. 2015, arXiv 1503.02531).

    Math:
        L = T^2 * mean_tokens KL( softmax(z_t / T) || softmax(z_s / T) )

    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures.

    Args:
        student_logits: ``(..., V)`` logits of the model being trained.
        teacher_logits: ``(..., V)`` logits of the frozen teacher (detached here).
        temperature: softening temperature T > 0.
        mask: optional ``(...)`` bool/0-1 tensor; only positions where it is true are averaged
            (e.g. the attention mask, so padding does not count).
    """
    if student_logits.shape != teacher_logits.shape:
        raise QHybridError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if not temperature > 0:
        raise QHybridError(f"temperature={temperature} must be > 0")
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (...)
    if mask is not None:
        m = mask.to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0) * t * t
    return kl.mean() * t * t


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def clean_stale_checkpoints(directory: str | Path) -> list[Path]:
    """Remove the temporary folders (``.step-*.tmp-<pid>``) of saves killed half-way.

    Only folders of processes that are no longer running are removed; returns what was removed.
    """
    removed = []
    for tmp in Path(directory).glob(".step-*.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    state: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``<directory>/step-XXXXXXXX/`` atomically and point ``<directory>/latest`` at it.

    The folder holds ``model.safetensors`` (weights; shared tensors handled by safetensors),
    ``optimizer.pt``, ``rng.pt`` (python, numpy, torch and CUDA generator states) and ``state.json``
    (loop position and anything in ``state``). It is built under a temporary name and renamed into
    place, and ``latest`` is rewritten atomically afterwards, so a crash at any point leaves the
    previous checkpoint intact and ``latest`` naming a complete one. Only the ``keep`` newest are kept.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = dict(state or {})
    step = int(meta.get("step", 0))
    name = f"step-{step:08d}"
    final = directory / name
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(_unwrap(model), str(tmp / "model.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    atomic_write_json(tmp / "state.json", meta)
    for f in tmp.iterdir():  # make the contents durable before the rename publishes them
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(directory / "latest", name + "\n")
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder (or a checkpoints directory with a ``latest`` file) into ``model``.

    Returns:
        The ``state.json`` mapping (``step``, ``epoch``, ``batch_in_epoch``, ...).
    """
    from safetensors.torch import load_model

    path = Path(path)
    if (path / "latest").is_file():
        path = path / (path / "latest").read_text().strip()
    if not (path / "model.safetensors").is_file():
        raise QHybridError(
            f"'{path}' is not a checkpoint (no model.safetensors); pass a step-* folder or the "
            "checkpoints folder that holds a 'latest' file"
        )
    load_model(_unwrap(model), str(path / "model.safetensors"))
    if optimizer is not None and (path / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    if restore_rng and (path / "rng.pt").is_file():
        _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    state: dict[str, Any] = json.loads((path / "state.json").read_text())
    return state


# ----------------------------------------------------------------------------------------------
# The loop


class Closure:
    """Re-evaluates the step's loss for closure-based optimizers (``optimizer.step(closure)``).

    Calling it zeroes the gradients, runs forward and backward over the step's micro-batches and
    returns the mean loss (a detached scalar tensor). Second-order optimizers may also read
    ``model``, ``batches`` and ``loss_fn`` to form curvature-vector products on the same data.
    """

    def __init__(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> None:
        self.model = model
        self.batches = batches
        self.loss_fn = loss_fn
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        for p in self.model.parameters():
            p.grad = None
        total = torch.zeros((), device=next(self.model.parameters()).device)
        with torch.enable_grad():
            for batch in self.batches:
                loss, _ = _split_loss(self.loss_fn(self.model, batch))
                (loss / len(self.batches)).backward()
                total = total + loss.detach()
        return total / len(self.batches)


def _split_loss(out: LossOutput) -> tuple[torch.Tensor, Mapping[str, float]]:
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, {}


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None turns the bar off when stderr is not a terminal (CI logs, pipes).
    return tqdm(total=total, initial=initial, disable=None if enabled else True, dynamic_ncols=True)


PLAIN_PROGRESS_SECONDS = 15.0  # longest silence of the plain progress lines
PLAIN_PROGRESS_MIN_SECONDS = 2.0  # shortest gap between two of them (fast loops stay readable)


class _PlainProgress:
    """Progress lines on stderr when it is not a terminal (where tqdm stays silent).

    A line every ``every`` steps, but not more often than every 2 s; at least one every 15 s; and
    one at the last step.
    """

    def __init__(self, total: int, enabled: bool, every: int) -> None:
        self.total, self.every = total, every
        self.enabled = enabled and not sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()

    def __call__(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        since = now - self.last
        due = (step % self.every == 0 and since >= PLAIN_PROGRESS_MIN_SECONDS) or (
            since >= PLAIN_PROGRESS_SECONDS
        )
        if not self.enabled or not (due or step == self.total):
            return
        self.last = now
        line = f"step {step}/{self.total} loss {loss:.4g} ({now - self.t0:.0f} s)"
        print(line, file=sys.stderr, flush=True)


def _micro_batches(
    data: Iterable[Batch], start_epoch: int, skip: int, max_epochs: int | None
) -> Iterator[tuple[int, int, Batch]]:
    """Yield ``(epoch, index_in_epoch, batch)`` forever (or for ``max_epochs``), from a resume point."""
    epoch = start_epoch
    while max_epochs is None or epoch < max_epochs:
        set_epoch = getattr(data, "set_epoch", None) or getattr(
            getattr(data, "sampler", None), "set_epoch", None
        )
        if set_epoch is not None:
            set_epoch(epoch)
        n = 0
        for i, batch in enumerate(data):
            n += 1
            if epoch == start_epoch and i < skip:
                continue
            yield epoch, i, batch
        if n == 0:
            raise QHybridError(
                "the training data yielded no batches; check the dataset and batch size"
            )
        epoch += 1


def train(
    model: nn.Module,
    data: Iterable[Batch],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig = TrainConfig(),
    *,
    eval_fn: EvalFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    metrics_path: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``optimizer`` until ``config.max_steps`` (or early stop).

    Args:
        model: the module; moved to ``config.device`` (wrapped in DDP under ``torchrun``).
        data: a re-iterable of batches (tensors, tuples or dicts of tensors); moved to the device.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {"metric": value})``; the loss is the
            mean over the micro-batch.
        optimizer: a first-order optimizer, or one with ``requires_closure = True`` whose
            ``step(closure)`` does its own update (clipping is then its business).
        config: loop settings.
        eval_fn: ``eval_fn(model) -> {"val_loss": ..., ...}``, called every ``eval_every`` steps and at
            the end; the model is in eval mode and gradients are off during the call.
        checkpoint_dir: where checkpoints go; ``None`` = no checkpoints.
        resume: ``True`` to continue from ``checkpoint_dir/latest`` when present, or a checkpoint path.
        metrics_path: a ``metrics.jsonl`` to append records to (rank 0 only). On resume, records past
            the checkpoint's step are dropped first, so the file reads as one uninterrupted run.
        on_step: an optional callback ``on_step(step, loss)`` after each optimizer step.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the weights are those of the last good step and
            the newest checkpoint on disk is the last good one.
    """
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    distributed = _maybe_init_distributed(device)
    _, rank = _world()
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(config.seed)
    model.to(device)  # the optimizer's state tensors follow the parameters lazily
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and rank == 0:
        for tmp in clean_stale_checkpoints(ckpt_dir):
            logger.info("removed %s, left by a save that was killed", tmp)
    loop = _Loop(config, rank, ckpt_dir)
    loop.resume(_resume_from(resume, ckpt_dir), model, optimizer, metrics_path)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loop.open_metrics(metrics_path)

    current_factor: float | None = None
    net.train()
    bar = _progress(config.max_steps, loop.step, config.progress and rank == 0)
    plain = _PlainProgress(config.max_steps, config.progress and rank == 0, config.log_every)
    stream = _micro_batches(data, loop.epoch, loop.batch_in_epoch, config.max_epochs)
    try:
        while loop.step < config.max_steps:
            micro: list[Batch] = []
            for _ in range(config.grad_accum_steps):
                item = next(stream, None)
                if item is None:
                    break
                loop.epoch, idx, batch = item
                loop.batch_in_epoch = idx + 1
                micro.append(_to_device(batch, device))
            if not micro:  # max_epochs reached
                break
            factor = lr_factor(loop.step, config)
            if factor != current_factor:  # constant stretches of the schedule cost nothing
                current_factor = factor
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor

            if getattr(optimizer, "requires_closure", False):
                loss_value, norm, extras = _closure_step(net, micro, loss_fn, optimizer)
            else:
                loss_value, norm, extras = _gradient_step(
                    net, model, micro, loss_fn, optimizer, config
                )
            if not (math.isfinite(loss_value) and math.isfinite(norm)):
                what, value = (
                    ("loss", loss_value)
                    if not math.isfinite(loss_value)
                    else ("gradient norm", norm)
                )
                raise NonFiniteLossError(
                    f"{what} is {value} at step {loop.step} "
                    f"(lr={optimizer.param_groups[0]['lr']:.3g}); the weights were not updated "
                    f"and the last good checkpoint is {loop.last_ckpt}. "
                    "Lower the learning rate, enable clip_grad_norm, or check the data."
                )
            loop.step += 1
            loop.loss = loss_value
            bar.update(1)
            plain(loop.step, loss_value)
            if on_step is not None:
                on_step(loop.step, loss_value)
            if loop.step % config.log_every == 0 or loop.step == config.max_steps:
                if distributed:  # every rank logs at the same steps: log the mean over ranks
                    loop.loss = _mean_over_ranks(loss_value, device)
                lr = optimizer.param_groups[0]["lr"]
                record = {"step": loop.step, "epoch": loop.epoch, "loss": loop.loss, "lr": lr}
                loop.log({**record, **extras})
                bar.set_postfix(loss=f"{loop.loss:.4g}")
            stop = False
            if config.eval_every and loop.step % config.eval_every == 0:
                stop = loop.evaluate(net, model, eval_fn)
            if config.checkpoint_every and loop.step % config.checkpoint_every == 0:
                loop.checkpoint(model, optimizer)
            if stop:
                loop.stopped_early = True
                logger.info(
                    "early stop at step %d: %s did not improve", loop.step, config.early_stop_metric
                )
                break
        if loop.evaluated_at != loop.step:
            loop.evaluate(net, model, eval_fn)
        if loop.checkpointed_at != loop.step:
            loop.checkpoint(model, optimizer)
    finally:
        bar.close()
        loop.close()
    return TrainResult(
        step=loop.step,
        epoch=loop.epoch,
        loss=loop.loss,
        history=loop.history,
        last_eval=loop.last_eval,
        best_metric=loop.best,
        stopped_early=loop.stopped_early,
        checkpoint=loop.last_ckpt,
        wall_time_s=time.perf_counter() - t0,
    )


def _resume_from(resume: bool | str | Path, ckpt_dir: Path | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (nothing saved yet)."""
    if not resume:
        return None
    path = Path(resume) if not isinstance(resume, bool) else ckpt_dir
    if path is None:
        raise QHybridError(
            "resume=True needs checkpoint_dir (or pass the checkpoint path as resume)"
        )
    if (path / "latest").is_file() or (path / "model.safetensors").is_file():
        return path
    return None


def _closure_step(
    net: nn.Module, micro: list[Batch], loss_fn: LossFn, optimizer: torch.optim.Optimizer
) -> tuple[float, float, Mapping[str, float]]:
    """One step of a closure optimizer (it updates the weights itself): (loss, 0, {})."""
    loss_t = optimizer.step(Closure(net, micro, loss_fn))  # type: ignore[arg-type]
    if loss_t is None:
        raise QHybridError("a closure optimizer's step(closure) must return the loss")
    return float(loss_t.detach() if torch.is_tensor(loss_t) else loss_t), 0.0, {}


def _gradient_step(
    net: nn.Module,
    model: nn.Module,
    micro: list[Batch],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
) -> tuple[float, float, Mapping[str, float]]:
    """Backward over the micro-batches, clipping and the optimizer step: (loss, grad norm, extras).

    One host sync per step reads both the loss and the gradient norm; when either is not finite
    the gradients are dropped and the weights are left alone (the loop then raises).
    """
    n = len(micro)
    distributed = net is not model
    extras: Mapping[str, float] = {}
    loss_sum = torch.zeros(())  # replaced by the first micro-batch's loss
    for i, batch in enumerate(micro):
        # DDP: all-reduce gradients only on the last micro-batch of the step.
        sync = not distributed or i == n - 1
        with contextlib.nullcontext() if sync else net.no_sync():  # type: ignore[operator]
            with _autocast(config, batch):
                loss, extras = _split_loss(loss_fn(net, batch))
            (loss if n == 1 else loss / n).backward()
        loss_sum = loss.detach() if i == 0 else loss_sum + loss.detach()
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    loss_value, norm_value = torch.stack([loss_sum / n, norm.to(loss_sum)]).tolist()
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value, extras
    if config.clip_grad_norm is not None:
        nn.utils.clip_grads_with_norm_(params, config.clip_grad_norm, norm)
        extras = {**extras, "grad_norm": norm_value}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, norm_value, extras


def _autocast(config: TrainConfig, batch: Batch) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast over the forward when ``config.autocast == "bf16"`` (weights stay fp32)."""
    if config.autocast == "off":
        return contextlib.nullcontext()
    leaf = next(iter(batch.values())) if isinstance(batch, Mapping) else batch
    leaf = leaf[0] if isinstance(leaf, (tuple, list)) else leaf
    device = leaf.device.type if torch.is_tensor(leaf) else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


class _Loop:
    """The loop's position and bookkeeping: what a checkpoint saves, what the metrics file gets."""

    def __init__(self, config: TrainConfig, rank: int, ckpt_dir: Path | None) -> None:
        self.config, self.rank, self.ckpt_dir = config, rank, ckpt_dir
        self.step = self.epoch = self.batch_in_epoch = self.bad_evals = 0
        self.best: float | None = None
        self.loss = float("nan")
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, float] = {}
        self.last_ckpt: Path | None = None
        self.stopped_early = False
        # The step of the last eval / checkpoint; a fresh run still evaluates at the end.
        self.evaluated_at = self.checkpointed_at = -1
        self.metrics_file: IO[str] | None = None

    def resume(
        self,
        path: Path | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metrics_path: str | Path | None,
    ) -> None:
        """Load a checkpoint's weights, optimizer, RNG and loop position; trim the metrics file."""
        if path is None:
            return
        state = load_checkpoint(path, model, optimizer)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best, self.bad_evals = state.get("best"), int(state.get("bad_evals", 0))
        logger.info("resumed from %s at step %d", path, self.step)
        if metrics_path is not None and self.rank == 0:
            kept = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= self.step]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            atomic_write_text(metrics_path, text)

    def open_metrics(self, metrics_path: str | Path | None) -> None:
        if metrics_path is not None and self.rank == 0:
            Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
            self.metrics_file = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self.metrics_file is not None:
            self.metrics_file.close()

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(record, sort_keys=True) + "\n")
            self.metrics_file.flush()

    def evaluate(self, net: nn.Module, model: nn.Module, eval_fn: EvalFn | None) -> bool:
        """Run eval_fn; returns True when early stopping triggers."""
        self.evaluated_at = self.step
        if eval_fn is None:
            return False
        net.eval()
        with torch.no_grad():
            self.last_eval = {k: float(v) for k, v in eval_fn(model).items()}
        net.train()
        self.log({"step": self.step, "epoch": self.epoch, **self.last_eval})
        key, config = self.config.early_stop_metric, self.config
        if key is None:
            return False
        if key not in self.last_eval:
            raise QHybridError(
                f"early_stop_metric={key!r} is not among eval_fn's results {sorted(self.last_eval)}"
            )
        value = self.last_eval[key]
        sign = 1.0 if config.early_stop_mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > config.early_stop_min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return bool(config.early_stop_patience) and self.bad_evals >= config.early_stop_patience

    def checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Save a resumable checkpoint (rank 0); never publish a non-finite model as "good"."""
        self.checkpointed_at = self.step
        if self.ckpt_dir is None or self.rank != 0:
            return
        for p in model.parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(
                    f"parameters became non-finite by step {self.step}; last good checkpoint: "
                    f"{self.last_ckpt}"
                )
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "loss": self.loss,
        }
        self.last_ckpt = save_checkpoint(
            self.ckpt_dir, model, optimizer, state=state, keep=self.config.keep_checkpoints
        )
