"""Insider attacks: Byzantine clients with valid keys, on digits with 10 clients, 10 rounds.

1. Integrity attacks (20% of clients: double submission, NaN, 3e38, num_examples = 2^53, extra /
   re-typed tensors): every Byzantine update must be rejected with its reason code, no honest one.
2. Accuracy under attack: scaled (x10), sign-flipped (x-4) updates and label-flip poisoning at 20%
   and 40% Byzantine clients, FedAvg beside FedMedian, FedTrimmedAvg (beta 0.2), Krum and
   Multi-Krum (told the Byzantine count), each inside VerifyingStrategy (in-process engine, the
   Flower strategies' own aggregate_train).

    .venv/bin/python benchmarks/bench_pqc_fl_byzantine.py [--seeds 0 1 2]

Writes benchmarks/results/pqc_fl_byzantine.json and docs/figures/pqc_fl_byzantine.png.
Target: at 20% Byzantine (scaled or sign-flipped), the robust wrapper within 2 points of the
attack-free run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from pqc_fl.bench import hardware
from pqc_fl.byzantine import DEFAULT_BASE, accuracy_under_attack, integrity_runs
from qhybrid.report import markdown_table
from qhybrid.runs import write_results

STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum")
ATTACKS = ("scale", "sign_flip", "label_flip")


def figure(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(12, 3.4), sharey=True)
    for ax, attack in zip(axes, ATTACKS, strict=True):
        for s in STRATEGIES:
            xs, ys = (
                [0.0],
                [
                    np.mean(
                        [
                            r["final_acc"]
                            for r in rows
                            if r["strategy"] == s and r["attack"] == "none"
                        ]
                    )
                ],
            )
            for f in (0.2, 0.4):
                xs.append(f)
                ys.append(
                    np.mean(
                        [
                            r["final_acc"]
                            for r in rows
                            if r["strategy"] == s and r["attack"] == attack and r["fraction"] == f
                        ]
                    )
                )
            ax.plot(xs, ys, "o-", label=s)
        ax.set(title=attack, xlabel="Byzantine fraction", xticks=[0, 0.2, 0.4])
    axes[0].set_ylabel("final test accuracy")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=DEFAULT_BASE.rounds)
    args = parser.parse_args()
    base = dataclasses.replace(DEFAULT_BASE, rounds=args.rounds)
    t0 = time.perf_counter()
    integrity = integrity_runs(base)
    print(markdown_table(integrity, floatfmt=".4g"), flush=True)
    rows = accuracy_under_attack(
        base, STRATEGIES, ATTACKS, (0.2, 0.4), args.seeds, on_row=lambda r: print(r, flush=True)
    )
    table = []
    free = {
        s: np.mean([r["final_acc"] for r in rows if r["strategy"] == s and r["attack"] == "none"])
        for s in STRATEGIES
    }
    for a in ATTACKS:
        for f in (0.2, 0.4):
            row = {"attack": a, "byzantine": f"{f:.0%}"}
            for s in STRATEGIES:
                row[s] = float(
                    np.mean(
                        [
                            r["final_acc"]
                            for r in rows
                            if r["strategy"] == s and r["attack"] == a and r["fraction"] == f
                        ]
                    )
                )
            table.append(row)
    table.insert(
        0, {"attack": "none", "byzantine": "0%", **{s: float(free[s]) for s in STRATEGIES}}
    )
    print(markdown_table(table, floatfmt=".4f"))
    ref = free["fedavg"]
    robust = [s for s in STRATEGIES if s != "fedavg"]
    best20 = {
        a: max(
            next(t for t in table if t["attack"] == a and t["byzantine"] == "20%")[s]
            for s in robust
        )
        for a in ("scale", "sign_flip")
    }
    result = {
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "config": dataclasses.asdict(base),
        "seeds": args.seeds,
        "integrity": integrity,
        "runs": rows,
        "table": table,
        "attack_free_fedavg": ref,
        "best_robust_at_20pct": best20,
        "integrity_target_met": all(
            r["all_rejected_as_expected"] and r["honest_rejected"] == 0 for r in integrity
        ),
        "robust_target_met": all(ref - v <= 0.02 for v in best20.values()),
        "seconds": time.perf_counter() - t0,
    }
    write_results("benchmarks/results/pqc_fl_byzantine.json", result, depends=("pqc_fl",))
    figure(rows, "docs/figures/pqc_fl_byzantine.png")
    print(
        {
            k: result[k]
            for k in (
                "best_robust_at_20pct",
                "integrity_target_met",
                "robust_target_met",
                "seconds",
            )
        }
    )


if __name__ == "__main__":
    main()
