"""Signature primitives: keygen / sign / verify, median and IQR, every scheme and backend, with sizes.

Messages: a 32-byte digest (what digest mode signs, rounded down from the ~330-byte envelope),
1 MiB, and a whole update of the 9.7 M-parameter model (38.7 MB, what "full" mode signs). Anchors
side by side: Ed25519 (the classical baseline every column is also given as a ratio to) and, for
ML-DSA, the second backend (pqcrypto 1.0) against the default (OpenSSL in `cryptography`).

    .venv/bin/python benchmarks/bench_pqc_fl_primitives.py [--budget 0.3] [--no-update]

Writes benchmarks/results/pqc_fl_primitives.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from pqc_fl.bench import hardware, primitive_markdown_rows, primitive_table
from qhybrid.report import markdown_table
from qhybrid.runs import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per cell (>= 3 calls)")
    parser.add_argument("--no-update", action="store_true", help="skip the 38.7 MB message")
    parser.add_argument("--schemes", nargs="*", default=None)
    parser.add_argument("--out", default="benchmarks/results/pqc_fl_primitives.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    update_bytes = 0 if args.no_update else 4 * 9_670_666
    rows = primitive_table(args.schemes, update_bytes=update_bytes, budget_s=args.budget)
    ed = next(r for r in rows if r["scheme"] == "ed25519")
    default = {r["scheme"]: r for r in reversed(rows)}  # first listed backend = default
    for r in rows:
        for op in ("sign_32B", "verify_32B", "sign_1MiB", "verify_1MiB"):
            r[f"{op}_vs_ed25519"] = r[op]["median"] / ed[op]["median"]
        d = default[r["scheme"]]
        r["sign_32B_vs_default_backend"] = r["sign_32B"]["median"] / d["sign_32B"]["median"]
    result = {
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "update_bytes": update_bytes,
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    write_results(args.out, result, depends=("pqc_fl",))
    print(markdown_table(primitive_markdown_rows(rows), floatfmt=".3g"))


if __name__ == "__main__":
    main()
