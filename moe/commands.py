"""``qhybrid moe ...``: train the subject model, and compress a model with any chain of passes.

* ``qhybrid moe train [--set steps=400 seed=1]`` — trains the Mixtral-style subject on the multi-domain
  token task and saves it (``subject/``) in a run folder.
* ``qhybrid moe compress [--set model_dir="runs/.../subject" drop_to=6 merge_to=4 keep_ratio=0.6
  distill_steps=200 avg_bits=3.0]`` — applies drop → merge → compress → distill → quantise (each step
  optional), saves the result with :func:`moe.plan.save_compressed` and writes a report with the
  before/after table. Without ``model_dir`` it trains the subject first.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from qhybrid.config import add_config_arguments, config_from_args


@dataclass(frozen=True)
class TrainSubjectConfig:
    name: str = "moe-train"  # run-folder prefix
    seed: int = 0  # task rules, initialisation and data order
    steps: int = 400  # AdamW steps
    train_sequences: int = 4096  # training sequences
    test_sequences: int = 512  # held-out sequences
    experts: int = 8  # experts per layer
    top_k: int = 2  # experts per token
    hidden: int = 64  # model width
    intermediate: int = 128  # expert hidden width


@dataclass(frozen=True)
class CompressConfig:
    name: str = "moe-compress"  # run-folder prefix
    seed: int = 0  # subject seed (task rules) and pass seed
    model_dir: str = ""  # a subject saved by 'qhybrid moe train'; empty = train one now
    calib_sequences: int = 256  # calibration sequences for routing statistics
    drop_to: int = 0  # experts kept per layer by dropping; 0 = no dropping
    drop_criterion: str = "exact"  # frequency, weighted_frequency, saliency, reap, entropy, weight_norm, stable_rank, exact, greedy
    drop_rounds: int = 1  # 1 = one-shot; more = iterative with re-estimated statistics
    merge_to: int = 4  # experts kept per layer by merging; 0 = no merging
    budget: str = "uniform"  # per-layer budget for merging/dropping: uniform or global
    keep_ratio: float = 1.0  # hidden neurons kept per expert (structured pruning); 1 = off
    rank: int = 0  # low-rank factor rank per expert matrix; 0 = full rank
    distill_steps: int = 0  # recovery distillation steps from the uncompressed model
    avg_bits: float = 0.0  # average expert bits for mixed-precision fake quantisation; 0 = off
    allocation: str = "sensitivity"  # bit allocation: sensitivity, frequency, outlier, uniform
    steps: int = 400  # subject training steps when model_dir is empty


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="moe_command", metavar="COMMAND")
    p = sub.add_parser(
        "train", help="train the Mixtral-style subject model on the multi-domain task"
    )
    add_config_arguments(p)
    p.set_defaults(func=_train)
    p = sub.add_parser("compress", help="drop / merge / compress / distill / quantise experts")
    add_config_arguments(p)
    p.set_defaults(func=_compress)


def _subject_cfg(c: TrainSubjectConfig) -> Any:
    from moe.subject import SubjectConfig

    return SubjectConfig(steps=c.steps, train_sequences=c.train_sequences, test_sequences=c.test_sequences,
                         experts=c.experts, top_k=c.top_k, hidden=c.hidden,
                         intermediate=c.intermediate)  # fmt: skip


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
    import json
    from pathlib import Path

    from moe.layers import MoEError
    from moe.subject import SubjectConfig, load_or_train, make_task

    if not c.model_dir:
        model, data, _ = load_or_train(SubjectConfig(steps=c.steps), c.seed)
        return model, data
    folder = Path(c.model_dir)
    meta = folder / "subject.json"
    if not meta.is_file():
        raise MoEError(
            f"'{folder}' is not a subject saved by 'qhybrid moe train' (no subject.json); train one "
            "with 'qhybrid moe train' or leave model_dir empty"
        )
    info = json.loads(meta.read_text())
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(folder).float().eval()
    return model, make_task(SubjectConfig(**info["subject"]), int(info["seed"]))


def _compress(args: argparse.Namespace) -> int:
    import copy

    from moe import experiment as ex
    from moe.compress import compress_experts
    from moe.drop import drop_experts
    from moe.merge import merge_experts
    from moe.plan import save_compressed
    from moe.quantize import quantize_experts
    from qhybrid.report import Section, write_report
    from qhybrid.runs import create_run

    c = config_from_args(CompressConfig, args)
    run = create_run(c.name, c, root=args.out or "runs", seed=c.seed)
    model, data = _load_subject(c)
    ctx = ex.Context(data, model, seed=c.seed, calib_sequences=c.calib_sequences,
                     distill_steps=c.distill_steps)  # fmt: skip

    def chain(m: Any, cx: Any) -> None:
        if c.drop_to:
            drop_experts(m, cx.stats(m), num_experts=c.drop_to, criterion=c.drop_criterion,  # type: ignore[arg-type]
                         budget=c.budget, rounds=c.drop_rounds, batches=cx.calib())  # type: ignore[arg-type]  # fmt: skip
        if c.merge_to:
            merge_experts(m, cx.stats(m), num_experts=c.merge_to, budget=c.budget)  # type: ignore[arg-type]
        if c.keep_ratio < 1 or c.rank:
            compress_experts(m, cx.stats(m), keep_ratio=c.keep_ratio, rank=c.rank or None)
        cx.distill(m)
        if c.avg_bits:
            quantize_experts(m, cx.stats(m), avg_bits=c.avg_bits, allocation=c.allocation)  # type: ignore[arg-type]

    base_row, _ = ex.run_method("uncompressed", model, ctx, ex.baseline)
    row, compressed = ex.run_method("compressed", copy.deepcopy(model), ctx, chain, base_row)
    base_row.update(retention=1.0)
    path = save_compressed(compressed, run.artefact("compressed", "config.json").parent)
    run.log_metrics({k: v for k, v in row.items() if k != "method"})
    section = Section("MoE compression", text=f"Compressed model saved to `{path}` (load with "
                      "`moe.load_compressed`).")  # fmt: skip
    section.add_table("Before and after", [base_row, row])
    write_report(run, "qhybrid moe compress", [section])
    print(f"retention {row['retention']:.4f}; expert params {row['expert params']:,} "
          f"(was {base_row['expert params']:,}); saved {path}")  # fmt: skip
    return 0
