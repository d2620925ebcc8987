"""Real low-bit storage of the experts: bytes on disk, resident bytes and perplexity, measured.

For each seed: train (or reload from ``--cache``) the Mixtral-style subject, save it in fp32 with
:func:`moe.checkpoint.save_compressed`, then quantise copies to ``--avg-bits`` average bits with packed storage
(allocations: uniform, QuantMoE-Bench frequency, our sensitivity knapsack) and with fake quantisation
(the ablation: rounded weights kept in fp32), save each, reload it with :func:`moe.checkpoint.load_compressed`
and measure

* expert bytes on disk — from the safetensors header's data offsets (every ``.experts.`` tensor) — and
  the whole file's size (``os.path.getsize``);
* resident expert bytes of the reloaded model — the tensor storages its experts modules hold
  (:func:`moe.layers.expert_bytes`) — and the process RSS growth while loading (coarse: allocator
  noise is of the order of the model here);
* held-out next-token accuracy and perplexity of the reloaded model.

    python -m benchmarks.bench_moe_storage --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from moe.checkpoint import load_compressed, save_compressed, tensor_bytes_on_disk
from moe.layers import expert_bytes
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.subject import (
    SubjectConfig,
    add_subject_arguments,
    calibration,
    evaluate,
    load_or_train,
    subject_from_args,
)
from qhybrid.runs import atomic_write_json, environment_info

VARIANTS = {  # name -> (allocation, storage)
    "packed uniform": ("uniform", "packed"),
    "packed frequency (QuantMoE-Bench)": ("frequency", "packed"),
    "packed sensitivity (ours)": ("sensitivity", "packed"),
    "fake uniform (ablation, fp32 storage)": ("uniform", "fake"),
}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(model: torch.nn.Module, folder: Path, test: torch.Tensor) -> dict[str, Any]:
    save_compressed(model, folder)
    disk = tensor_bytes_on_disk(folder)
    rss0 = _rss()
    again = load_compressed(folder)
    rss = _rss() - rss0
    return {
        "expert bytes on disk": sum(v for k, v in disk.items() if ".experts." in k),
        "file bytes": os.path.getsize(folder / "model.safetensors"),
        "resident expert bytes": expert_bytes(again),
        "rss growth on load": rss,
        **evaluate(again, test),
    }


def run_seed(
    seed: int, cfg: SubjectConfig, args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    model, data, _ = load_or_train(cfg, seed, args.cache)
    base = measure(model, tmp / f"fp32-{seed}", data.test)
    rows = [{"seed": seed, "variant": "fp32", "avg bits": 32.0, **base}]
    calib = calibration(data, args.calib_sequences)
    for name, (allocation, storage) in VARIANTS.items():
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        out = quantize_experts(
            m,
            collect_routing_stats(m, calib, max_cached_tokens=4096),
            avg_bits=args.avg_bits,
            allocation=allocation,
            storage=storage,
        )  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        row = {
            "seed": seed,
            "variant": name,
            "avg bits": out["avg_bits"],
            "pass seconds": seconds,
            **measure(m, tmp / f"{name.split()[0]}-{allocation}-{seed}", data.test),
        }
        for key in ("expert bytes on disk", "resident expert bytes", "file bytes"):
            row[f"{key} / fp32"] = row[key] / base[key]
        row["ppl increase"] = row["perplexity"] / base["perplexity"] - 1
        row["retention"] = row["accuracy"] / base["accuracy"]
        rows.append(row)
        print(
            f"seed {seed} {name:40s} disk x{row['expert bytes on disk / fp32']:.4f} resident "
            f"x{row['resident expert bytes / fp32']:.4f} ppl +{row['ppl increase']:.2%}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_subject_arguments(parser)
    parser.add_argument("--avg-bits", type=float, default=3.0)
    parser.add_argument("--calib-sequences", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/moe_storage.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = subject_from_args(args)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows += run_seed(seed, cfg, args, Path(tmp))
    keys = (
        "avg bits",
        "expert bytes on disk / fp32",
        "resident expert bytes / fp32",
        "file bytes / fp32",
        "ppl increase",
        "retention",
        "accuracy",
        "perplexity",
    )
    summary = []
    for name in VARIANTS:
        sel = [r for r in rows if r["variant"] == name]
        summary.append(
            {
                "variant": name,
                "seeds": len(sel),
                **{k: statistics.fmean(r[k] for r in sel) for k in keys},
            }
        )
    sens = next(s for s in summary if s["variant"] == "packed sensitivity (ours)")
    worst = {
        k: max(s[k] for s in summary if s["variant"].startswith("packed"))
        for k in ("expert bytes on disk / fp32", "resident expert bytes / fp32")
    }
    others = [
        s["ppl increase"]
        for s in summary
        if s["variant"] in ("packed uniform", "packed frequency (QuantMoE-Bench)")
    ]
    targets = {
        "expert bytes on disk <= 0.13x fp32 (every packed variant)": {
            "value": worst["expert bytes on disk / fp32"],
            "met": worst["expert bytes on disk / fp32"] <= 0.13,
        },
        "resident expert bytes <= 0.35x fp32 (every packed variant)": {
            "value": worst["resident expert bytes / fp32"],
            "met": worst["resident expert bytes / fp32"] <= 0.35,
        },
        "sensitivity: perplexity increase <= 5%": {
            "value": sens["ppl increase"],
            "met": sens["ppl increase"] <= 0.05,
        },
        "sensitivity no worse than uniform and frequency (ppl)": {
            "value": sens["ppl increase"],
            "other": others,
            "met": sens["ppl increase"] <= min(others) + 1e-9,
        },
    }
    result = {
        "command": f"python -m benchmarks.bench_moe_storage --seeds {' '.join(map(str, args.seeds))} "
        f"--steps {args.steps} --avg-bits {args.avg_bits} --threads {args.threads} --task {args.task} "
        f"--seq-len {args.seq_len} --train-sequences {args.train_sequences} "
        f"--test-sequences {args.test_sequences} --out {args.out}",
        "subject": {**cfg.__dict__},
        "summary": summary,
        "targets": targets,
        "rows": rows,
        "wall_seconds": time.perf_counter() - t0,
        "env": environment_info(seed=args.seeds[0]),
    }
    atomic_write_json(Path(args.out), result)
    for k, v in targets.items():
        print(f"{'MET ' if v['met'] else 'MISS'} {k}: {v}")


if __name__ == "__main__":
    main()
