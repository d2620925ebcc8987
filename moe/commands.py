"""``qhybrid moe ...``: train the subject model, and compress a model with any chain of passes.

* ``qhybrid moe train [--set steps=400 seed=1]`` — trains the Mixtral-style subject on the multi-domain
  token task and saves it (``subject/``) in a run folder.
* ``qhybrid moe compress [--set model_dir="path" calib="notes.txt" drop_to=6 merge_to=4 keep_ratio=0.6
  distill_steps=200 avg_bits=3.0]`` — applies drop → merge → compress → distill → quantise (each step
  optional) and writes a report with the before/after table. ``model_dir`` is a subject saved by
  ``qhybrid moe train``, or any local Hugging Face checkpoint of a supported MoE family (checked by
  :func:`moe.checkpoint.load_moe_checkpoint`; calibrated on ``calib``: a .txt / .jsonl file or
  ``builtin``, the Python standard library's source). The result is saved with stock ``save_pretrained``
  where it is still a stock architecture, else with :func:`moe.checkpoint.save_compressed`
  (:func:`moe.checkpoint.save_result`). Without ``model_dir`` it trains the subject first.

Every value is declared once in the config dataclasses below (kinds from :mod:`moe.values`, the
subject's from :class:`moe.subject.SubjectConfig`) and checked before anything is written: the
settings, then the model and the calibration text, then the work estimate; a run folder is created
only after that and removed again if the command fails before its result is saved.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval, MaxLen, MinLen

from moe.values import (
    DEFAULT_MAX_CPU_S,
    DEFAULT_MAX_MEMORY_GB,
    DOCS,
    FLOPS,
    Allocation,
    Budget,
    Combine,
    Count,
    CpuSeconds,
    Criterion,
    KeepRatio,
    MemoryGB,
    NonNegativeCount,
    RunName,
    SaveDtype,
    Seed,
    Sequences,
    Storage,
    forward_seconds,
)
from qhybrid.config import add_config_arguments, check_fields, check_work, config_from_args
from qhybrid.errors import ConfigError, QHybridError

__all__ = ["CompressConfig", "TrainSubjectConfig", "check_against_model", "register"]

MAX_SUBSETS = 20_000  # NAEE's exact search: the most subsets one layer may enumerate (moe.drop)
Path_ = Annotated[str, MaxLen(4096)]  # a file or folder path


@dataclass(frozen=True)
class TrainSubjectConfig:
    """``qhybrid moe train``: the subject model (:class:`moe.subject.SubjectConfig`) trained on
    the multi-domain token task and saved."""

    name: RunName = "moe-train"  # run-folder prefix
    seed: Seed = 0  # task rules, initialisation and data order
    steps: Count = 400  # AdamW steps
    train_sequences: Sequences = 4096  # training sequences
    test_sequences: Sequences = 512  # held-out sequences
    experts: Annotated[int, Interval(ge=2, le=1024)] = 8  # experts per layer
    top_k: Annotated[int, Interval(ge=1, le=1024)] = 2  # experts per token
    hidden: Annotated[int, Interval(ge=4, le=65536)] = 64  # model width (a multiple of 8)
    intermediate: Annotated[int, Interval(ge=4, le=262144)] = 128  # expert width (multiple of 4)
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse training estimated above (CPU-core s)
    max_memory_gb: MemoryGB = DEFAULT_MAX_MEMORY_GB  # refuse training estimated above (GB)

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        subject = self.subject()  # the subject's own cross-field rules
        seconds, gigabytes = subject.work()
        drivers = (
            f"steps={self.steps} x 32 sequences x {subject.seq_len} tokens through "
            f"{subject.active_parameters():,} active parameters (hidden={self.hidden}, "
            f"intermediate={self.intermediate}, top_k={self.top_k})"
        )
        check_work(seconds, self.max_cpu_s, what="this training", drivers=drivers, docs=DOCS)
        check_work(gigabytes, self.max_memory_gb, what="this training", drivers=drivers,
                   key="max_memory_gb", unit="GB", docs=DOCS)  # fmt: skip

    def subject(self) -> Any:
        """The :class:`moe.subject.SubjectConfig` this config trains."""
        from moe.subject import SubjectConfig

        fields = {f.name for f in dataclasses.fields(SubjectConfig)}
        return SubjectConfig(
            **{k: v for k, v in dataclasses.asdict(self).items() if k in fields and k != "seed"}
        )


# settings that only a checkpoint reads (a subject calibrates on its own task), with their defaults
CHECKPOINT_ONLY = ("calib", "tokenizer", "seq_len", "eval_sequences", "save_dtype")


@dataclass(frozen=True)
class CompressConfig:
    """``qhybrid moe compress``: drop -> merge -> prune / low rank -> distill -> quantise, each
    optional, on a subject or a local checkpoint."""

    name: RunName = "moe-compress"  # run-folder prefix
    seed: Seed = 0  # subject seed (task rules) and pass seed
    model_dir: Path_ = (
        ""  # a subject saved by 'qhybrid moe train' or a checkpoint; empty = train one
    )
    calib_sequences: Count = 256  # calibration sequences for routing statistics
    drop_to: NonNegativeCount = 0  # experts kept per layer by dropping; 0 = no dropping
    drop_criterion: Criterion = "exact"  # one of moe.values.CRITERIA
    drop_rounds: Annotated[int, Interval(ge=1, le=64)] = 1  # 1 = one-shot; more = iterative
    merge_to: NonNegativeCount = 4  # experts kept per layer by merging; 0 = no merging
    merge_combine: Combine = "union"  # union (ours, best measured) or average (MC-SMoE) or subspace
    budget: Budget = "uniform"  # per-layer budget for merging/dropping: uniform or global
    keep_ratio: KeepRatio = 1.0  # expert neurons kept (pruning); 1 = off
    rank: NonNegativeCount = 0  # low-rank factor rank per expert matrix; 0 = full rank
    distill_steps: NonNegativeCount = 0  # recovery distillation steps from the original
    avg_bits: Annotated[float, Interval(ge=0, le=8)] = 0.0  # average expert bits (2-8); 0 = off
    allocation: Allocation = (
        "sensitivity"  # bit allocation: sensitivity, frequency, outlier, uniform
    )
    storage: Storage = "packed"  # packed (real b-bit codes) or fake (ablation, float)
    steps: Count = 400  # subject training steps when model_dir is empty
    group_size: Count = 32  # quantisation group (inputs per scale); divides H and I
    calib: Annotated[str, MinLen(1), MaxLen(4096)] = (
        "builtin"  # checkpoints: .txt/.jsonl or builtin
    )
    tokenizer: Annotated[str, MinLen(1), MaxLen(4096)] = (
        "folder"  # checkpoints: folder, bytes, a path
    )
    seq_len: Annotated[int, Interval(ge=2, le=1_000_000)] = 64  # checkpoints: tokens per sequence
    eval_sequences: Count = 32  # checkpoints: held-out sequences for metrics
    save_dtype: SaveDtype = "auto"  # checkpoints: auto (the input's dtype), float32, bfloat16, ...
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse runs estimated above (CPU-core s)
    max_memory_gb: MemoryGB = DEFAULT_MAX_MEMORY_GB  # refuse runs estimated above (GB)

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        if 0 < self.avg_bits < 2:
            raise ConfigError(
                f"avg_bits={self.avg_bits} cannot be met with widths 2, 3, 4, 8; use 0 (off) or a "
                "budget in [2, 8]"
            )
        if self.drop_to and self.merge_to > self.drop_to:
            raise ConfigError(
                f"merge_to={self.merge_to} exceeds drop_to={self.drop_to}: merging runs after dropping; "
                f"choose merge_to <= {self.drop_to}"
            )
        if self.drop_rounds > 1 and not self.drop_to:
            raise ConfigError(f"drop_rounds={self.drop_rounds} needs drop_to > 0")
        if self.rank and self.avg_bits:
            raise ConfigError(
                "rank and avg_bits cannot be combined: low-rank factors are not quantised; use one"
            )
        if not self.model_dir:
            self.check_subject_settings("model_dir is empty: the subject is trained now")
            from moe.subject import SubjectConfig

            self.check_work(*SubjectConfig(steps=self.steps).work())
        elif self.steps != 400:
            raise ConfigError(
                f"steps={self.steps} trains a subject, but model_dir={self.model_dir!r} is given; "
                "drop --set steps (it applies only when model_dir is empty)"
            )

    def check_subject_settings(self, why: str) -> None:
        """Refuse settings only a checkpoint reads when the model is a subject (``why``)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = [k for k in CHECKPOINT_ONLY if getattr(self, k) != defaults[k]]
        if given:
            raise ConfigError(
                f"{', '.join(f'{k}={getattr(self, k)!r}' for k in given)} appl"
                f"{'ies' if len(given) == 1 else 'y'} to checkpoints only, and {why}; a subject "
                "calibrates on its own task: drop the setting, or pass a checkpoint as model_dir"
            )

    def check_work(self, seconds: float, gigabytes: float, drivers: str = "") -> None:
        """Refuse a run estimated above ``max_cpu_s`` or ``max_memory_gb``."""
        drivers = drivers or f"training the subject for steps={self.steps}"
        check_work(seconds, self.max_cpu_s, what="this compression", drivers=drivers, docs=DOCS)
        check_work(gigabytes, self.max_memory_gb, what="this compression", drivers=drivers,
                   key="max_memory_gb", unit="GB", docs=DOCS)  # fmt: skip


def _drop_subsets(c: CompressConfig, experts: int) -> int:
    """The most subsets NAEE's exact search enumerates in one layer over the dropping rounds."""
    if not c.drop_to or c.drop_criterion != "exact":
        return 0
    most, start = 0, experts
    for r in range(1, c.drop_rounds + 1):
        n = max(c.drop_to, round(experts - (experts - c.drop_to) * r / c.drop_rounds))
        most, start = max(most, math.comb(start, n)), n
    return most


def pass_seconds(c: CompressConfig, model: Any, *, tokens_per_sequence: int) -> float:
    """Estimated CPU-core seconds of the chain on ``model`` (:mod:`moe.values`): statistics before
    each pass and evaluation (forwards over the calibration and held-out sequences), distillation
    (a teacher forward and a student step per sequence), and NAEE's exact search."""
    from moe.layers import find_moe_layers

    layers = find_moe_layers(model)
    experts = sum(p.numel() for lay in layers for p in lay.experts.parameters())
    others = sum(p.numel() for p in model.parameters()) - experts
    top_k = max(lay.top_k for lay in layers)
    active = others + experts * top_k // max(1, min(lay.num_experts for lay in layers))
    calib = c.calib_sequences * tokens_per_sequence
    forwards = 6 * calib + 4 * c.eval_sequences * tokens_per_sequence
    seconds = forward_seconds(active, forwards)
    seconds += forward_seconds(active, c.distill_steps * 16 * tokens_per_sequence) * 4 / 3
    subsets = _drop_subsets(c, min(lay.num_experts for lay in layers))
    hidden = layers[0].hidden_size
    routes = max(lay.num_routes for lay in layers)
    return seconds + subsets * 4096 * 2 * hidden * routes * len(layers) / FLOPS


def check_against_model(c: CompressConfig, model: Any, *, checkpoint: bool = True) -> None:
    """Every setting of ``c`` checked against the model's experts, before a run folder exists: expert
    counts (drop_to, merge_to), widths (keep_ratio, rank, group_size), layouts (packed storage and
    pruning need fused SwiGLU experts), the sequence length, NAEE's search size and the work."""
    from moe.compress import round_up
    from moe.layers import find_moe_layers
    from moe.modeling import check_group_size

    layers = find_moe_layers(model)
    name = type(model).__name__
    experts = min(lay.num_experts for lay in layers)
    top_k = max(lay.top_k for lay in layers)
    hidden, inter = layers[0].hidden_size, min(lay.intermediate_size for lay in layers)
    if c.drop_to and not top_k <= c.drop_to <= experts:
        raise QHybridError(
            f"drop_to={c.drop_to} does not fit {name} ({experts} experts per layer, {top_k} per "
            f"token); choose {top_k} <= drop_to <= {experts}, or 0 (off)"
        )
    kept = c.drop_to or experts
    if c.merge_to > kept:
        raise QHybridError(
            f"merge_to={c.merge_to} exceeds the {kept} experts per layer of {name}"
            f"{' after dropping' if c.drop_to else ''}; choose 1 <= merge_to <= {kept}, or 0 (off)"
        )
    if _drop_subsets(c, experts) > MAX_SUBSETS:
        raise QHybridError(
            f"drop_criterion='exact' with drop_to={c.drop_to} enumerates "
            f"{_drop_subsets(c, experts):,} subsets of {experts} experts per layer, above "
            f"{MAX_SUBSETS:,}; use drop_criterion='greedy' (the same loss, one expert at a time)"
        )
    fused = all(lay.gated for lay in layers)
    if (c.keep_ratio < 1 or c.rank or (c.avg_bits and c.storage == "packed")) and not fused:
        raise QHybridError(
            f"{name} has Switch experts (ReLU MLPs): neuron pruning, low rank and packed storage need "
            "fused SwiGLU experts; use storage='fake' for quantisation"
        )
    if c.keep_ratio < 1:
        inter = min(inter, round_up(c.keep_ratio * inter, 8))
    if c.rank and round_up(c.rank, 8) >= min(inter, hidden):
        raise QHybridError(
            f"rank={c.rank} (rounded up to {round_up(c.rank, 8)}) is not below min(expert width {inter}, "
            f"hidden size {hidden}), so factoring saves nothing; choose a rank below {min(inter, hidden)}"
        )
    if c.avg_bits:
        check_group_size(hidden, c.group_size, f"{name} experts' gate/up projection (hidden size)")
        check_group_size(inter, c.group_size, f"{name} experts' down projection (expert width)")
    positions = getattr(model.config, "max_position_embeddings", None)
    if checkpoint and isinstance(positions, int) and c.seq_len > positions:  # subjects: own task
        raise QHybridError(f"seq_len={c.seq_len} exceeds {name}'s {positions} positions")
    length = c.seq_len if checkpoint else int(getattr(model.config, "max_position_embeddings", 64))
    c.check_work(
        pass_seconds(c, model, tokens_per_sequence=length),
        0.0,
        f"{name}: statistics and evaluation on calib_sequences={c.calib_sequences}, "
        f"distill_steps={c.distill_steps}, drop_criterion={c.drop_criterion!r}",
    )


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``qhybrid moe train`` and ``qhybrid moe compress`` to ``parser``."""
    sub = parser.add_subparsers(dest="moe_command", metavar="COMMAND")
    p = sub.add_parser(
        "train", help="train the Mixtral-style subject model on the multi-domain task"
    )
    add_config_arguments(p, "moe.commands:TrainSubjectConfig")
    p.set_defaults(func=_train)
    p = sub.add_parser("compress", help="drop / merge / compress / distill / quantise experts")
    add_config_arguments(p, "moe.commands:CompressConfig")
    p.set_defaults(func=_compress)


def _train(args: argparse.Namespace) -> int:
    from moe.subject import train_subject
    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json, fresh_run

    c = config_from_args(TrainSubjectConfig, args)
    scfg = c.subject()
    with fresh_run(c.name, c, root=args.out or "runs", seed=c.seed) as run:
        model, _, metrics = train_subject(scfg, c.seed, metrics_path=run.artefact("metrics.jsonl"))
        folder = run.artefact("subject", "config.json").parent
        model.save_pretrained(folder)
        atomic_write_json(
            folder / "subject.json", {"seed": c.seed, "subject": dataclasses.asdict(scfg)}
        )
    section = Section("MoE subject model", text=f"Saved to `{folder}`.")
    section.add_table("Test metrics", [metrics])
    write_report(run, "qhybrid moe train", [section])
    print(
        f"subject: {folder}\naccuracy {metrics['accuracy']:.4f}, perplexity {metrics['perplexity']:.4f}"
    )
    return 0


def _compress(args: argparse.Namespace) -> int:
    """Check every input (settings, folder, calibration, tokenizer, work) before a run folder
    exists; a run that fails before its result is saved is removed, so a failed command leaves
    nothing behind."""
    from qhybrid.runs import check_root

    c = config_from_args(CompressConfig, args)
    root = check_root(args.out or "runs")
    if c.model_dir and root.resolve().is_relative_to(Path(c.model_dir).resolve()):
        raise QHybridError(
            f"--out '{root}' lies inside model_dir '{c.model_dir}', which is never written; pass "
            "another --out"
        )
    if c.model_dir and not (Path(c.model_dir) / "subject.json").is_file():
        return _compress_checkpoint(c, root, _prepare_checkpoint(c))
    return _compress_subject(c, root, *_prepare_subject(c))


def _prepare_subject(c: CompressConfig) -> tuple[Any, Any]:
    """The subject to compress (trained now when ``model_dir`` is empty), checked against ``c``
    first; a subject folder's ``subject.json`` and weights are read and checked here."""
    import json

    from moe.subject import SubjectConfig, build_subject, load_or_train, make_task

    if not c.model_dir:
        check_against_model(c, build_subject(SubjectConfig(steps=c.steps)), checkpoint=False)
        model, data, _ = load_or_train(SubjectConfig(steps=c.steps), c.seed)
        return model, data
    c.check_subject_settings(f"model_dir={c.model_dir!r} is a subject")
    path = Path(c.model_dir) / "subject.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        scfg, seed = SubjectConfig(**info["subject"]), int(info["seed"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise QHybridError(f"{path} is not a subject description: {err}") from err
    from moe.checkpoint import load_moe_checkpoint

    model = load_moe_checkpoint(c.model_dir)
    check_against_model(c, model, checkpoint=False)
    return model, make_task(scfg, seed)


def _chain(c: CompressConfig, model: Any, stats: Any, calib: Any, distill: Any) -> None:
    """drop -> merge -> prune / low rank -> distill -> quantise, each step optional."""
    from moe.compress import compress_experts
    from moe.drop import drop_experts
    from moe.merge import merge_experts
    from moe.quantize import quantize_experts

    if c.drop_to:
        drop_experts(
            model,
            stats(model),
            num_experts=c.drop_to,
            criterion=c.drop_criterion,
            budget=c.budget,
            rounds=c.drop_rounds,
            batches=calib,
        )
    if c.merge_to:
        merge_experts(
            model, stats(model), num_experts=c.merge_to, budget=c.budget, combine=c.merge_combine
        )
    if c.keep_ratio < 1 or c.rank:
        compress_experts(model, stats(model), keep_ratio=c.keep_ratio, rank=c.rank or None)
    distill(model)
    if c.avg_bits:
        quantize_experts(
            model,
            stats(model),
            avg_bits=c.avg_bits,
            allocation=c.allocation,
            storage=c.storage,
            group_size=c.group_size,
        )


@dataclass
class _Prepared:
    """A checked checkpoint with its calibration and held-out batches."""

    model: Any
    calib: list[Any]
    held_out: list[Any]
    how: str  # how the text was tokenised
    dtype: Any  # torch dtype the result is saved in
    parts: dict[str, int]  # bytes on disk per part of the input


def _prepare_checkpoint(c: CompressConfig) -> _Prepared:
    """Load and check the checkpoint, its memory, the calibration text and the work, in that
    order, before anything is written."""
    import torch

    from moe.calibration import calibration_texts, text_batches
    from moe.checkpoint import bytes_by_part, checkpoint_dtype, load_moe_checkpoint, parameters

    numel = parameters(c.model_dir)  # from the safetensors headers, before loading anything
    gigabytes = 4 * numel * (2 if c.distill_steps else 1) * 1.5 / 1e9
    c.check_work(0.0, gigabytes, f"{numel:,} parameters in fp32" + (
        ", twice (the distillation teacher)" if c.distill_steps else ""))  # fmt: skip
    model = load_moe_checkpoint(c.model_dir)  # checks the folder before anything is built
    check_against_model(c, model)
    texts = calibration_texts(c.calib)
    batches, how = text_batches(
        model,
        texts,
        tokenizer=c.model_dir if c.tokenizer == "folder" else c.tokenizer,
        sequences=c.calib_sequences + c.eval_sequences,
        seq_len=c.seq_len,
    )
    n_eval = max(1, -(-c.eval_sequences // 16))
    if len(batches) <= n_eval:
        raise QHybridError(
            f"calibration text {c.calib!r} is too short for calibration and held-out batches "
            f"({len(batches)} batches of 16 x {c.seq_len} tokens); pass more text or a smaller seq_len"
        )
    auto = c.save_dtype == "auto"
    dtype = checkpoint_dtype(c.model_dir) if auto else getattr(torch, c.save_dtype)
    return _Prepared(
        model, batches[:-n_eval], batches[-n_eval:], how, dtype, bytes_by_part(c.model_dir)
    )


def _compress_checkpoint(c: CompressConfig, root: Path, p: _Prepared) -> int:
    """Compress a prepared checkpoint in a fresh run folder, save and reload it, and report."""
    import copy
    import time

    from moe.checkpoint import load_moe_checkpoint, save_result
    from moe.compress import distill
    from moe.experiment import evaluate_lm, model_summary
    from moe.stats import collect_routing_stats
    from qhybrid.runs import fresh_run

    model, calib = p.model, p.calib
    before: dict[str, Any] = {
        "model": "original",
        **model_summary(model),
        **evaluate_lm(model, p.held_out),
    }
    teacher = copy.deepcopy(model) if c.distill_steps else None

    def stats(m: Any) -> Any:
        return collect_routing_stats(m, calib, max_cached_tokens=4096)

    def recover(m: Any) -> None:
        if teacher is not None:
            steps = [calib[i % len(calib)] for i in range(c.distill_steps)]
            distill(m, teacher, steps, steps=c.distill_steps, seed=c.seed)

    with fresh_run(c.name, c, root=root, seed=c.seed) as run:
        t0 = time.perf_counter()
        _chain(c, model, stats, calib, recover)
        seconds = time.perf_counter() - t0
        summary = model_summary(model)
        path, loader = save_result(
            model, run.artefact("compressed", "config.json").parent, dtype=p.dtype
        )
    again = load_moe_checkpoint(path)  # what a user gets: the saved folder, reloaded
    after: dict[str, Any] = {"model": "compressed (reloaded)", **summary, **evaluate_lm(again, p.held_out),
                             "pass seconds": seconds}  # fmt: skip
    after["retention"] = (
        after["accuracy"] / before["accuracy"] if before["accuracy"] else float("nan")
    )
    after["ppl increase"] = after["perplexity"] / before["perplexity"] - 1
    _report_checkpoint(c, run, p, before, after, path, loader)
    return 0


def _report_checkpoint(
    c: CompressConfig,
    run: Any,
    p: _Prepared,
    before: dict[str, Any],
    after: dict[str, Any],
    path: Path,
    loader: str,
) -> None:
    """metrics.jsonl, report.md and the printed summary of a compressed checkpoint."""
    from moe.checkpoint import PARTS, bytes_by_part
    from qhybrid.report import Section, write_report

    parts = bytes_by_part(path)
    part_rows = [{"part": k, "input bytes": p.parts[k], "output bytes": parts[k]} for k in PARTS]
    run.log_metrics({k: v for k, v in after.items() if k != "model"})
    section = Section(
        "MoE compression of a checkpoint",
        text=(
            f"`{c.model_dir}` ({type(p.model).__name__}), calibrated on {c.calib!r}: {len(p.calib)} batches of "
            f"{c.seq_len} tokens, tokenised with {p.how}; metrics on {len(p.held_out)} held-out batches after "
            f"them, the compressed model reloaded from its folder. Saved in {p.dtype} (packed codes and "
            f"their fp16 scales as they are) to `{path}`; load with {loader}."
        ),
    )
    section.add_table("Before and after", [before, after])
    section.add_table("Bytes on disk per part", part_rows)
    write_report(run, "qhybrid moe compress", [section])
    print(
        f"retention {after['retention']:.4f}; perplexity {before['perplexity']:.3f} -> {after['perplexity']:.3f}; "
        f"expert MB {before['expert MB']:.3f} -> {after['expert MB']:.3f}; saved {path} in {p.dtype} (load with {loader})"
    )
    for row in part_rows:
        print(
            f"  {row['part']:20s} {row['input bytes']:>12,d} -> {row['output bytes']:>12,d} bytes"
        )


def _compress_subject(c: CompressConfig, root: Path, model: Any, data: Any) -> int:
    """Compress a subject in a fresh run folder (its baseline beside), save it, and report."""
    import copy

    from moe import experiment as ex
    from moe.checkpoint import save_compressed
    from qhybrid.report import Section, write_report
    from qhybrid.runs import fresh_run

    ctx = ex.Context(
        data, model, seed=c.seed, calib_sequences=c.calib_sequences, distill_steps=c.distill_steps
    )

    def chain(m: Any, cx: Any) -> None:
        _chain(c, m, cx.stats, cx.calib(), cx.distill)

    with fresh_run(c.name, c, root=root, seed=c.seed) as run:
        base_row, _ = ex.run_method("uncompressed", model, ctx, ex.baseline)
        row, compressed = ex.run_method("compressed", copy.deepcopy(model), ctx, chain, base_row)
        base_row.update(retention=1.0)
        path = save_compressed(compressed, run.artefact("compressed", "config.json").parent)
    run.log_metrics({k: v for k, v in row.items() if k != "method"})
    section = Section(
        "MoE compression",
        text=(
            f"Compressed model saved to `{path}` (load with `moe.load_compressed` or "
            "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`)."
        ),
    )
    section.add_table("Before and after", [base_row, row])
    write_report(run, "qhybrid moe compress", [section])
    print(
        f"retention {row['retention']:.4f}; expert params {row['expert params']:,} "
        f"(was {base_row['expert params']:,}); saved {path}"
    )
    return 0
