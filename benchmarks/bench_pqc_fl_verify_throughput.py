"""Server verification throughput with a process pool of 1, 2, ... workers.

Each worker verifies whole signed updates (parse, key lookup, ML-DSA verify, digest of a 4.8 k
parameter update); the anchor is the 1-worker pool in the same run. Target (issue 7): at least
0.8 x workers speed-up where cores allow (the result records the core count and load average:
on a shared machine the second core may not be free).

    .venv/bin/python benchmarks/bench_pqc_fl_verify_throughput.py [--updates 4000] [--workers 1 2]

Writes benchmarks/results/pqc_fl_verify_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import sys

from pqc_fl.bench import hardware, verify_throughput
from qhybrid.report import markdown_table
from qhybrid.runs import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--schemes", nargs="+", default=["ml-dsa-44", "ml-dsa-65", "falcon-512"])
    parser.add_argument("--out", default="benchmarks/results/pqc_fl_verify_throughput.json")
    args = parser.parse_args()
    workers = args.workers or sorted(
        {1, *range(2, (os.cpu_count() or 1) + 1, 2), os.cpu_count() or 1}
    )
    rows = []
    for s in args.schemes:
        rows += verify_throughput(s, n_updates=args.updates, workers=workers)
    top = [r for r in rows if r["workers"] == max(workers)]
    result = {
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "rows": rows,
        "target": "speedup >= 0.8 x workers",
        "min_efficiency_at_max_workers": min(r["efficiency"] for r in top),
    }
    write_results(args.out, result, depends=("pqc_fl",))
    print(markdown_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
