"""Merging 8 -> 4: router-logit grouping (our MC-SMoE port) vs expert-output grouping vs random grouping.

Random grouping is averaged over several draws per subject, since one draw is a noisy baseline. Every
grouping runs with alignment, with and without our least-squares refit on calibration data (0 KD
steps). The account of the result, measured per subject and layer over expert pairs (i < j):

* the router-logit cosine ``cos(l_i, l_j)`` (MC-SMoE's grouping signal) — its largest off-diagonal value;
* its Pearson correlation with the cosine of the two experts' outputs on the same calibration inputs
  (how similar the experts actually compute): router-logit grouping can only beat random grouping when
  experts whose router columns agree also compute alike, i.e. when this correlation is clearly positive.

Writes ``benchmarks/results/moe_grouping.json`` (or ``--out``).

    python -m benchmarks.bench_moe_grouping --seeds 0 1 2 --draws 5
    python -m benchmarks.bench_moe_grouping --task stdlib --seq-len 64 --steps 800 --train-sequences 8192 \
        --test-sequences 1024 --out benchmarks/results/moe_grouping_stdlib.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path
from typing import Any

import torch

from moe.experiment import Context
from moe.layers import find_moe_layers
from moe.merge import _output_cosine, merge_experts
from moe.subject import (
    add_subject_arguments,
    evaluate,
    load_or_train,
    subject_from_args,
)
from qhybrid.runs import atomic_write_json, environment_info


def account(model: torch.nn.Module, stats: Any) -> dict[str, float]:
    """Largest off-diagonal router-logit cosine and its correlation with expert-output cosine."""
    router, output = [], []
    for layer in find_moe_layers(model):
        s = stats[layer.name]
        i, j = torch.triu_indices(layer.num_experts, layer.num_experts, offset=1)
        router.append(s.logit_cosine()[i, j])
        output.append(_output_cosine(layer, s.sample)[i, j])
    r, o = torch.cat(router), torch.cat(output)
    corr = float(torch.corrcoef(torch.stack([r, o]))[0, 1])
    return {
        "router cos max": float(r.max()),
        "router cos mean": float(r.mean()),
        "corr(router cos, output cos)": corr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draws", type=int, default=5, help="random groupings per subject")
    add_subject_arguments(parser)
    parser.add_argument("--out", default="benchmarks/results/moe_grouping.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = subject_from_args(args)
    rows, accounts = [], []
    for seed in args.seeds:
        model, data, _ = load_or_train(cfg, seed, args.cache)
        ctx = Context(data, model, seed=seed)
        stats = ctx.stats(model)
        accounts.append({"seed": seed, **account(model, stats)})
        print(accounts[-1], flush=True)
        base = evaluate(model, data.test)["accuracy"]
        for refit in (False, True):
            for grouping in ("router_logits", "outputs", "random"):
                for draw in range(args.draws if grouping == "random" else 1):
                    m = copy.deepcopy(model)
                    merge_experts(
                        m, stats, num_experts=4, grouping=grouping, refit=refit, seed=draw
                    )  # type: ignore[arg-type]
                    acc = evaluate(m, data.test)["accuracy"]
                    rows.append(
                        {
                            "seed": seed,
                            "grouping": grouping,
                            "LS refit on calib": refit,
                            "draw": draw,
                            "retention": acc / base,
                        }
                    )
                    print(rows[-1], flush=True)
    summary = {
        f"{g}, {'LS refit' if refit else 'no refit'}": statistics.fmean(
            r["retention"] for r in rows if r["grouping"] == g and r["LS refit on calib"] == refit
        )
        for refit in (False, True)
        for g in ("router_logits", "outputs", "random")
    }
    atomic_write_json(
        Path(args.out),
        {
            "command": f"python -m benchmarks.bench_moe_grouping --seeds {' '.join(map(str, args.seeds))} "
            f"--draws {args.draws} --steps {args.steps} --task {args.task} --seq-len {args.seq_len} "
            f"--train-sequences {args.train_sequences} --test-sequences {args.test_sequences} --out {args.out}",
            "mean_retention": summary,
            "account": accounts,
            "rows": rows,
            "env": environment_info(seed=args.seeds[0]),
        },
    )
    print(summary)


if __name__ == "__main__":
    main()
