"""Merging 8 -> 4: router-logit grouping (MC-SMoE) vs expert-output grouping vs random grouping.

Random grouping is averaged over several draws per subject, since one draw is a noisy baseline. All
variants use alignment and the least-squares refit. Writes ``benchmarks/results/moe_grouping.json``.

    python -m benchmarks.bench_moe_grouping --seeds 0 1 2 --draws 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch

from moe.experiment import Context
from moe.merge import merge_experts
from moe.subject import SubjectConfig, evaluate, load_or_train
from qhybrid.runs import atomic_write_json, environment_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draws", type=int, default=3, help="random groupings per subject")
    parser.add_argument("--cache", default="runs/moe_subjects")
    parser.add_argument("--out", default="benchmarks/results/moe_grouping.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        model, data, _ = load_or_train(SubjectConfig(), seed, args.cache)
        ctx = Context(data, model, seed=seed)
        base = evaluate(model, data.test)["accuracy"]
        for grouping in ("router_logits", "outputs", "random"):
            for draw in range(args.draws if grouping == "random" else 1):
                m = copy.deepcopy(model)
                merge_experts(m, ctx.stats(m), num_experts=4, grouping=grouping, seed=draw)  # type: ignore[arg-type]
                acc = evaluate(m, data.test)["accuracy"]
                rows.append(
                    {"seed": seed, "grouping": grouping, "draw": draw, "retention": acc / base}
                )
                print(rows[-1], flush=True)
    summary = {
        g: statistics.fmean(r["retention"] for r in rows if r["grouping"] == g)
        for g in ("router_logits", "outputs", "random")
    }
    atomic_write_json(Path(args.out), {
        "command": f"python -m benchmarks.bench_moe_grouping --seeds {' '.join(map(str, args.seeds))} "
                   f"--draws {args.draws}",
        "mean_retention": summary, "rows": rows, "env": environment_info(seed=args.seeds[0]),
    })  # fmt: skip
    print(summary)


if __name__ == "__main__":
    main()
