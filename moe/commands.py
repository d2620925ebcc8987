"""``qhybrid moe ...``: train the subject model, and compress a model with any chain of passes.

* ``qhybrid moe train [--set steps=400 seed=1]`` — trains the Mixtral-style subject on the multi-domain
  token task and saves it (``subject/``) in a run folder.
* ``qhybrid moe compress [--set model_dir="path" calib="notes.txt" drop_to=6 merge_to=4 keep_ratio=0.6
  distill_steps=200 avg_bits=3.0]`` — applies drop → merge → compress → distill → quantise (each step
  optional) and writes a report with the before/after table. ``model_dir`` is a subject saved by
  ``qhybrid moe train``, or any local Hugging Face checkpoint of a supported MoE family (checked by
  :func:`moe.checkpoint.load_moe_checkpoint`; calibrated on ``calib``: a .txt / .jsonl file or
  ``builtin``, the Python standard library's source). The result is saved with stock ``save_pretrained``
  where it is still a stock architecture, else with :func:`moe.plan.save_compressed`
  (:func:`moe.checkpoint.save_result`). Without ``model_dir`` it trains the subject first.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le

from qhybrid.config import add_config_arguments, check_fields, config_from_args
from qhybrid.errors import QHybridError


@dataclass(frozen=True)
class TrainSubjectConfig:
    name: str = "moe-train"  # run-folder prefix
    seed: Annotated[int, Ge(0)] = 0  # task rules, initialisation and data order
    steps: Annotated[int, Ge(1)] = 400  # AdamW steps
    train_sequences: Annotated[int, Ge(8)] = 4096  # training sequences
    test_sequences: Annotated[int, Ge(8)] = 512  # held-out sequences
    experts: Annotated[int, Ge(2)] = 8  # experts per layer
    top_k: Annotated[int, Ge(1)] = 2  # experts per token
    hidden: Annotated[int, Ge(4)] = 64  # model width
    intermediate: Annotated[int, Ge(1)] = 128  # expert hidden width

    def __post_init__(self) -> None:
        check_fields(self)
        if self.top_k > self.experts:
            raise QHybridError(f"top_k={self.top_k} must be <= experts={self.experts}")


@dataclass(frozen=True)
class CompressConfig:
    name: str = "moe-compress"  # run-folder prefix
    seed: Annotated[int, Ge(0)] = 0  # subject seed (task rules) and pass seed
    model_dir: str = ""  # a subject saved by 'qhybrid moe train'; empty = train one now
    calib_sequences: Annotated[int, Ge(1)] = 256  # calibration sequences for routing statistics
    drop_to: Annotated[int, Ge(0)] = 0  # experts kept per layer by dropping; 0 = no dropping
    drop_criterion: str = "exact"  # one of moe.drop.CRITERIA
    drop_rounds: Annotated[int, Ge(1)] = 1  # 1 = one-shot; more = iterative, re-estimated stats
    merge_to: Annotated[int, Ge(0)] = 4  # experts kept per layer by merging; 0 = no merging
    merge_combine: str = "union"  # union (ours, best measured) or average (MC-SMoE) or subspace
    budget: str = "uniform"  # per-layer budget for merging/dropping: uniform or global
    keep_ratio: Annotated[float, Gt(0), Le(1)] = 1.0  # expert neurons kept (pruning); 1 = off
    rank: Annotated[int, Ge(0)] = 0  # low-rank factor rank per expert matrix; 0 = full rank
    distill_steps: Annotated[int, Ge(0)] = 0  # recovery distillation steps from the original
    avg_bits: Annotated[float, Ge(0), Le(8)] = 0.0  # average expert bits (2-8); 0 = off
    allocation: str = "sensitivity"  # bit allocation: sensitivity, frequency, outlier, uniform
    storage: str = "packed"  # packed (real b-bit codes) or fake (ablation, float)
    steps: Annotated[int, Ge(1)] = 400  # subject training steps when model_dir is empty
    group_size: Annotated[int, Ge(1)] = 32  # quantisation group (inputs per scale); divides H and I
    calib: str = "builtin"  # checkpoints: a .txt / .jsonl calibration file, or builtin (stdlib)
    tokenizer: str = "folder"  # checkpoints: folder (model_dir's), bytes (byte-level), or a folder
    seq_len: Annotated[int, Ge(2)] = 64  # checkpoints: tokens per calibration sequence
    eval_sequences: Annotated[int, Ge(1)] = 32  # checkpoints: held-out sequences for metrics
    save_dtype: str = "auto"  # checkpoints: auto (the input's dtype), float32, bfloat16 or float16

    def __post_init__(self) -> None:
        from typing import get_args

        from moe.drop import CRITERIA
        from moe.quantize import Allocation

        check_fields(self)
        for key, value, known in (
            ("drop_criterion", self.drop_criterion, CRITERIA),
            ("budget", self.budget, ("uniform", "global")),
            ("allocation", self.allocation, get_args(Allocation)),
            ("storage", self.storage, ("packed", "fake")),
            ("save_dtype", self.save_dtype, ("auto", "float32", "bfloat16", "float16")),
            ("merge_combine", self.merge_combine, ("union", "average", "subspace")),
        ):
            if value not in known:
                raise QHybridError(f"{key}={value!r} is not one of {list(known)}")
        if 0 < self.avg_bits < 2:
            raise QHybridError(
                f"avg_bits={self.avg_bits} cannot be met with widths 2, 3, 4, 8; use 0 (off) or a "
                "budget in [2, 8]"
            )
        if self.drop_to and self.merge_to > self.drop_to:
            raise QHybridError(
                f"merge_to={self.merge_to} exceeds drop_to={self.drop_to}: merging runs after dropping; "
                f"choose merge_to <= {self.drop_to}"
            )
        if self.drop_rounds > 1 and not self.drop_to:
            raise QHybridError(f"drop_rounds={self.drop_rounds} needs drop_to > 0")
        if self.rank and self.avg_bits:
            raise QHybridError(
                "rank and avg_bits cannot be combined: low-rank factors are not quantised; use one"
            )


def check_against_model(c: CompressConfig, model: Any, *, checkpoint: bool = True) -> None:
    """Every setting of ``c`` checked against the model's experts, before a run folder exists: expert
    counts (drop_to, merge_to), widths (keep_ratio, rank, group_size), layouts (packed storage and
    pruning need fused SwiGLU experts) and the sequence length."""
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


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="moe_command", metavar="COMMAND")
    p = sub.add_parser(
        "train", help="train the Mixtral-style subject model on the multi-domain task"
    )
    add_config_arguments(p, "moe.commands:TrainSubjectConfig")
    p.set_defaults(func=_train)
    p = sub.add_parser("compress", help="drop / merge / compress / distill / quantise experts")
    add_config_arguments(p, "moe.commands:CompressConfig")
    p.set_defaults(func=_compress)


def _subject_cfg(c: TrainSubjectConfig) -> Any:
    from moe.subject import SubjectConfig

    return SubjectConfig(
        steps=c.steps,
        train_sequences=c.train_sequences,
        test_sequences=c.test_sequences,
        experts=c.experts,
        top_k=c.top_k,
        hidden=c.hidden,
        intermediate=c.intermediate,
    )


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from moe.subject import train_subject
    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json, create_run

    c = config_from_args(TrainSubjectConfig, args)
    run = create_run(c.name, c, root=args.out or "runs", seed=c.seed)
    scfg = _subject_cfg(c)
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


def _load_subject(c: CompressConfig) -> tuple[Any, Any]:
    """The subject to compress (trained now when ``model_dir`` is empty), checked against ``c`` first."""
    import json
    from pathlib import Path

    from moe.subject import SubjectConfig, build_subject, load_or_train, make_task

    if not c.model_dir:
        check_against_model(c, build_subject(SubjectConfig(steps=c.steps)), checkpoint=False)
        model, data, _ = load_or_train(SubjectConfig(steps=c.steps), c.seed)
        return model, data
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
            criterion=c.drop_criterion,  # type: ignore[arg-type]
            budget=c.budget,  # type: ignore[arg-type]
            rounds=c.drop_rounds,
            batches=calib,
        )
    if c.merge_to:
        merge_experts(
            model,
            stats(model),
            num_experts=c.merge_to,
            budget=c.budget,  # type: ignore[arg-type]
            combine=c.merge_combine,  # type: ignore[arg-type]
        )
    if c.keep_ratio < 1 or c.rank:
        compress_experts(model, stats(model), keep_ratio=c.keep_ratio, rank=c.rank or None)
    distill(model)
    if c.avg_bits:
        quantize_experts(
            model,
            stats(model),
            avg_bits=c.avg_bits,
            allocation=c.allocation,  # type: ignore[arg-type]
            storage=c.storage,  # type: ignore[arg-type]
            group_size=c.group_size,
        )


def _compress(args: argparse.Namespace) -> int:
    """Check every input (settings, folder, calibration, tokenizer) before a run folder exists; a
    run that fails later is removed, so a failed command leaves nothing behind."""
    import shutil
    from pathlib import Path

    from qhybrid.runs import create_run

    c = config_from_args(CompressConfig, args)
    root = Path(args.out or "runs")
    checkpoint = bool(c.model_dir) and not (Path(c.model_dir) / "subject.json").is_file()
    if c.model_dir and root.resolve().is_relative_to(Path(c.model_dir).resolve()):
        raise QHybridError(
            f"--out '{root}' lies inside model_dir '{c.model_dir}', which is never written; pass "
            "another --out"
        )
    if checkpoint:
        prepared = _prepare_checkpoint(c)
    else:
        subject = _load_subject(c)
    run = create_run(c.name, c, root=root, seed=c.seed)
    try:
        if checkpoint:
            return _compress_checkpoint(c, run, prepared)
        return _compress_subject(c, run, *subject)
    except Exception:
        shutil.rmtree(run.path, ignore_errors=True)
        raise


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
    import torch

    from moe.checkpoint import (
        bytes_by_part,
        calibration_texts,
        checkpoint_dtype,
        load_moe_checkpoint,
        text_batches,
    )

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


def _compress_checkpoint(c: CompressConfig, run: Any, p: _Prepared) -> int:
    import copy
    import time

    from moe.checkpoint import PARTS, bytes_by_part, evaluate_lm, load_moe_checkpoint, save_result
    from moe.compress import distill
    from moe.experiment import model_summary
    from moe.stats import collect_routing_stats
    from qhybrid.report import Section, write_report

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
    parts = bytes_by_part(path)
    part_rows = [{"part": k, "input bytes": p.parts[k], "output bytes": parts[k]} for k in PARTS]
    run.log_metrics({k: v for k, v in after.items() if k != "model"})
    section = Section(
        "MoE compression of a checkpoint",
        text=(
            f"`{c.model_dir}` ({type(model).__name__}), calibrated on {c.calib!r}: {len(calib)} batches of "
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
    return 0


def _compress_subject(c: CompressConfig, run: Any, model: Any, data: Any) -> int:
    import copy

    from moe import experiment as ex
    from moe.plan import save_compressed
    from qhybrid.report import Section, write_report

    ctx = ex.Context(
        data, model, seed=c.seed, calib_sequences=c.calib_sequences, distill_steps=c.distill_steps
    )

    def chain(m: Any, cx: Any) -> None:
        _chain(c, m, cx.stats, cx.calib(), cx.distill)

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
