"""Benchmark the MoE compression passes against the issue's targets and the anchors' baselines.

For each seed: train (or reload from ``--cache``) the Mixtral-style subject on the multi-domain token
task, then run every method of ``moe.experiment.METHODS`` (merging vs random grouping / no alignment /
frequency dropping, merge + prune + distillation, one-shot and iterative dropping, 3-bit mixed precision
vs the QuantMoE-Bench frequency heuristic) on copies of it. Writes per-seed rows, means and the target
checks to ``benchmarks/results/moe_targets.json``.

    python -m benchmarks.bench_moe_targets --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from moe import experiment as ex
from moe.subject import (
    add_subject_arguments,
    load_or_train,
    per_domain,
    routing_entropy,
    subject_from_args,
)
from qhybrid.runs import atomic_write_json, environment_info

MERGE = "merge 8->4 + LS refit"
PORT = "merge 8->4 MC-SMoE port (no refit)"
PRUNE = "merge 8->4 + LS refit + prune to 72/128 neurons + 200 KD steps"
UNION = "merge 8->4 union + LS refit (ours)"
GROUPS = {
    "merging": [  # issue 22: merging vs the anchors at one expert budget (8 -> 4 per layer)
        PORT,
        MERGE,
        "merge 8->4 HC-SMoE port (no refit)",
        "merge 8->4 HC-SMoE port + LS refit",
        "merge 8->4 Sub-MoE port (no refit)",
        UNION,
        "drop 8->4 frequency",
        "drop 8->4 REAP",
        "drop 8->4 NAEE (exact)",
        "merge 8->4 + LS refit + 200 KD steps",
        "merge 8->4 union + LS refit + 200 KD steps",
        "drop 50% iterative (exact) + 100 KD steps/round",
        "drop 50% iterative (saliency) + 100 KD steps/round",
        "quant 3.0 bits sensitivity (packed)",
        "quant 3.0 bits uniform (packed)",
    ],
    "merge": [
        MERGE,
        PORT,
        "merge 8->4 + LS refit + 200 KD steps",
        "merge 8->4 MC-SMoE port (no refit) + 200 KD steps",
        "merge 8->4 random groups + LS refit",
        "merge 8->4 random groups (no refit)",
        "merge 8->4 no alignment + LS refit",
        "merge 8->4 global budget + LS refit",
        "drop 8->4 frequency",
    ],
    "compress": [PRUNE],
    "drop": [
        "drop 25% one-shot (exact)",
        "drop 25% one-shot (frequency)",
        "drop 50% iterative (exact)",
        "drop 50% iterative (saliency)",
    ],
    "drop_recovery": [
        "drop 50% iterative (saliency) + 100 KD steps/round",
        "drop 50% iterative (exact) + 100 KD steps/round",
    ],
    "quant": [
        "quant 3.0 bits sensitivity (packed)",
        "quant 3.0 bits frequency (packed)",
        "quant 3.0 bits uniform (packed)",
        "quant 3.0 bits uniform (fake quant, fp32 storage)",
    ],
}


def _mean(rows: list[dict[str, Any]], method: str, key: str) -> float:
    return statistics.fmean(r[key] for r in rows if r["method"] == method)


def _at_least(
    out: dict[str, Any], rows: list[dict[str, Any]], name: str, label: str, bound: float
) -> None:
    m = _mean(rows, name, "retention")
    out[f"{label} retention >= {bound}"] = {"value": m, "met": m >= bound}


# (label, method, row key, bound, "min" = at least / "max" = at most): met only if every seed meets it
TARGETS = [
    ("merge 8->4 without distillation: retention >= 0.95 (the best merge)", UNION, "retention", 0.95, "min"),
    ("merge 8->4 with <= 200 KD steps: retention >= 0.99", "merge 8->4 union + LS refit + 200 KD steps", "retention", 0.99, "min"),
    ("drop 50% iteratively, 100 KD steps per round: retention >= 0.97 (exact)", "drop 50% iterative (exact) + 100 KD steps/round", "retention", 0.97, "min"),
    ("drop 50% iteratively, 100 KD steps per round: retention >= 0.97 (saliency)", "drop 50% iterative (saliency) + 100 KD steps/round", "retention", 0.97, "min"),
    ("packed 3 bits (sensitivity): perplexity within 2%", "quant 3.0 bits sensitivity (packed)", "ppl increase", 0.02, "max"),
    ("packed 3 bits (sensitivity): resident expert bytes <= 0.13x fp32", "quant 3.0 bits sensitivity (packed)", "expert MB ratio", 0.13, "max"),
]  # fmt: skip


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target per seed, with the worst seed and the mean; met only if every seed meets it."""
    base = {r["seed"]: r for r in rows if r["method"] == "baseline"}
    out: dict[str, Any] = {}
    for label, method, key, bound, kind in TARGETS:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        per = {}
        for r in sel:
            value = (
                r["expert MB"] / base[r["seed"]]["expert MB"]
                if key == "expert MB ratio"
                else r[key]
            )
            per[r["seed"]] = value
        worst = min(per.values()) if kind == "min" else max(per.values())
        met = all(v >= bound if kind == "min" else v <= bound for v in per.values())
        out[label] = {
            "per seed": per,
            "worst": worst,
            "mean": statistics.fmean(per.values()),
            "met": met,
        }
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    for name in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == name]
        summary.append(
            {
                "method": name,
                **{
                    k: sel[0][k]
                    for k in ("recipe", "LS refit on calib", "distill steps")
                    if k in sel[0]
                },
                "seeds": len(sel),
                "retention mean": statistics.fmean(r["retention"] for r in sel),
                "retention min": min(r["retention"] for r in sel),
                "retention per seed": [r["retention"] for r in sel],
                **{
                    f"{k} mean": statistics.fmean(r[k] for r in sel)
                    for k in ("gen accuracy", "gen agreement", "gen prefix")
                    if all(k in r for r in sel)
                },
                "accuracy mean": statistics.fmean(r["accuracy"] for r in sel),
                "perplexity mean": statistics.fmean(r["perplexity"] for r in sel),
                "ppl increase mean": statistics.fmean(r.get("ppl increase", 0.0) for r in sel),
                "expert params": sel[0]["expert params"],
                "expert MB": sel[0]["expert MB"],
                "MoE MFLOPs/token": sel[0]["MoE MFLOPs/token"],
                "pass seconds mean": statistics.fmean(r["pass seconds"] for r in sel),
            }
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    add_subject_arguments(parser)
    parser.add_argument("--distill-steps", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/moe_targets.json")
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        help="instead of running, merge the rows of these result files into --out",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.combine:
        parts = [json.loads(Path(f).read_text()) for f in args.combine]
        # later files override earlier rows of the same (method, seed)
        rows = list({(r["method"], r["seed"]): r for p in parts for r in p["rows"]}.values())
        result = {
            "commands": [p["command"] for p in parts]
            + ["python -m benchmarks.bench_moe_targets --combine " + " ".join(args.combine)],
            "subject": parts[0]["subject"],
            "subjects": [s for p in parts for s in p["subjects"]],
            "summary": summarise(rows),
            "targets": targets(rows),
            "rows": rows,
            "wall_seconds": sum(p["wall_seconds"] for p in parts),
            "env": parts[0]["env"],
        }
        atomic_write_json(Path(args.out), result)
        for k, v in result["targets"].items():
            print(f"{'MET ' if v['met'] else 'MISS'} {k}: {v}")
        return
    torch.set_num_threads(args.threads)
    cfg = subject_from_args(args)
    rows: list[dict[str, Any]] = []
    subjects = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        model, data, metrics = load_or_train(cfg, seed, args.cache)
        subjects.append(
            {
                "seed": seed,
                **metrics,
                "per_domain": per_domain(model, data),
                "routing_entropy": routing_entropy(model, data),
            }
        )
        ctx = ex.Context(data, model, seed=seed, distill_steps=args.distill_steps)
        base, _ = ex.run_method("baseline", model, ctx, ex.METHODS["baseline"])
        base.update(retention=1.0, seed=seed)
        base["ppl increase"] = 0.0
        rows.append(base)
        for group in args.groups:
            for name in GROUPS[group]:
                row, _ = ex.run_method(name, model, ctx, ex.METHODS[name], base)
                row["seed"] = seed
                rows.append(row)
                print(
                    f"seed {seed} {name:40s} retention {row['retention']:.4f} "
                    f"ppl {row['perplexity']:.4f} ({row['pass seconds']:.1f} s)",
                    flush=True,
                )
    result = {
        "command": (
            f"python -m benchmarks.bench_moe_targets --seeds {' '.join(map(str, args.seeds))} "
            f"--groups {' '.join(args.groups)} --steps {args.steps} --task {args.task} "
            f"--seq-len {args.seq_len} --train-sequences {args.train_sequences} "
            f"--test-sequences {args.test_sequences} "
            f"--distill-steps {args.distill_steps} --out {args.out}"
        ),
        "subject": {**cfg.__dict__},
        "subjects": subjects,
        "summary": summarise(rows),
        "targets": targets(rows),
        "rows": rows,
        "wall_seconds": time.perf_counter() - t0,
        "env": environment_info(seed=args.seeds[0]),
    }
    atomic_write_json(Path(args.out), result)
    for k, v in result["targets"].items():
        print(f"{'MET ' if v['met'] else 'MISS'} {k}: {v}")


if __name__ == "__main__":
    main()
