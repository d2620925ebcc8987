"""Overhead of the shared training loop against a bare hand-written torch loop.

Same model (an MLP on scikit-learn digits), same data pipeline, same optimizer and step count; the
two loops run interleaved (A B A B ...) on one torch thread, timed by process CPU time (what this
process itself spends, so other processes on a shared machine disturb it little), and the best and
median of the repeats are compared. Target (issue 3): the shared loop at most 5% slower.

    .venv/bin/python benchmarks/bench_train_loop.py [--steps 400] [--repeats 7]

Writes benchmarks/results/train_loop.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.runs import atomic_write_json, environment_info
from qhybrid.stage import digits_tensors
from qhybrid.train import TrainConfig, make_loader, train


def make_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 10)
    )


def bare_loop(model: nn.Module, loader, steps: int) -> float:
    """What a researcher writes by hand: shuffle, forward, backward, step, print a loss now and then."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.process_time()
    step = 0
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                _ = loss.item()
            if step == steps:
                return time.process_time() - t0
    raise AssertionError("unreachable")


def shared_loop(model: nn.Module, loader, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrainConfig(
        max_steps=steps, clip_grad_norm=None, log_every=10, progress=False, device="cpu"
    )
    t0 = time.process_time()
    train(model, loader, lambda m, b: F.cross_entropy(m(b[0]), b[1]), opt, cfg)
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: less noise)")
    parser.add_argument("--out", default="benchmarks/results/train_loop.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_ds, _ = digits_tensors(0.2, seed=0)
    loader = make_loader(train_ds, args.batch, seed=0)
    times: dict[str, list[float]] = {"bare": [], "qhybrid": []}
    bare_loop(make_model(args.width), loader, 50)  # warm-up (allocator, kernels)
    for _ in range(args.repeats):
        times["bare"].append(bare_loop(make_model(args.width), loader, args.steps))
        times["qhybrid"].append(shared_loop(make_model(args.width), loader, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratio = best["qhybrid"] / best["bare"]
    result = {
        "benchmark": "train_loop_overhead",
        "command": "python benchmarks/bench_train_loop.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "model": f"MLP 64-{args.width}-{args.width}-10, AdamW, batch {args.batch}, digits",
        "steps": args.steps,
        "repeats": args.repeats,
        "timer": "time.process_time (CPU seconds of this process)",
        "best_s": best,
        "median_s": med,
        "ms_per_step_best": {k: 1000 * v / args.steps for k, v in best.items()},
        "all_s": times,
        "ratio_qhybrid_over_bare": ratio,
        "ratio_of_medians": med["qhybrid"] / med["bare"],
        "target": "ratio <= 1.05",
        "met": ratio <= 1.05,
        "env": environment_info(),
    }
    atomic_write_json(Path(args.out), result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("ms_per_step_best", "ratio_qhybrid_over_bare", "ratio_of_medians", "met")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
