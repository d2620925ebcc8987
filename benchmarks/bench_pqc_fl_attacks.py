"""Attack suite at scale: 100% rejection with the expected reason, 0 false rejections over >= 10,000 honest updates.

Every case of pqc_fl.attacks.ATTACKS and the three that need the server's memory (same-round
replay, double submission, node switch) for several schemes and all three signing modes; honest
updates are signed, sent through the wire format (every other one) and verified with replay
protection on. The per-case table lists each case, the reason it must get (digest mode) and in how
many scheme x mode rows it got exactly that reason.

    .venv/bin/python benchmarks/bench_pqc_fl_attacks.py [--honest 10000]

Writes benchmarks/results/pqc_fl_attacks.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from pqc_fl.attacks import run_attack_suite
from pqc_fl.bench import hardware
from qhybrid.report import markdown_table
from qhybrid.runs import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--honest", type=int, default=10_000, help="honest updates for ml-dsa-44 digest"
    )
    parser.add_argument("--out", default="benchmarks/results/pqc_fl_attacks.json")
    args = parser.parse_args()
    runs = [
        ("ml-dsa-44", "digest", args.honest),
        ("ml-dsa-44", "full", 500),
        ("ml-dsa-44", "mu", 500),
        ("ml-dsa-65", "digest", 500),
        ("ml-dsa-87", "digest", 500),
        ("falcon-512", "digest", 500),
        ("falcon-1024", "digest", 200),
        ("slh-dsa-sha2-128f", "digest", 100),
        ("ed25519", "digest", 500),
        ("ecdsa-p256", "digest", 500),
    ]
    summary, results = [], []
    for scheme, mode, honest in runs:
        t0 = time.perf_counter()
        r = run_attack_suite(scheme, mode, honest=honest)
        results.append(r)
        summary.append(
            {
                "scheme": scheme,
                "mode": mode,
                "cases": len(r["cases"]),
                "rejected": sum(c["rejected"] for c in r["cases"]),
                "as_expected": sum(c["as_expected"] for c in r["cases"]),
                "honest": honest,
                "false_rejections": r["false_rejections"],
                "seconds": time.perf_counter() - t0,
            }
        )
    total_honest = sum(s["honest"] for s in summary)
    by_case = [
        {
            "attack": case["attack"],
            "expected (digest)": case["expected"],
            "rows as expected": sum(
                r["cases"][i]["as_expected"] and r["cases"][i]["attack"] == case["attack"]
                for r in results
            ),
            "rows": len(results),
        }
        for i, case in enumerate(results[0]["cases"])
    ]
    result = {
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "summary": summary,
        "by_case": by_case,
        "results": results,
        "total_honest": total_honest,
        "rejection_rate": sum(s["rejected"] for s in summary) / sum(s["cases"] for s in summary),
        "false_rejections": sum(s["false_rejections"] for s in summary),
        "target_met": all(
            s["rejected"] == s["cases"] == s["as_expected"] and not s["false_rejections"]
            for s in summary
        )
        and total_honest >= 10_000,
    }
    write_results(args.out, result, depends=("pqc_fl",))
    print(markdown_table(by_case))
    print(markdown_table(summary, floatfmt=".3g"))
    print(
        f"rejection rate {result['rejection_rate']:.0%}, false rejections "
        f"{result['false_rejections']} / {total_honest} honest, target met: {result['target_met']}"
    )


if __name__ == "__main__":
    main()
