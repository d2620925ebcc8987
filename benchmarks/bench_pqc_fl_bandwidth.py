"""Bytes a signature adds to each update (envelope + signature + framing), as a share of the update, per scheme.

Update sizes: the digits MLP (4.8 k parameters), the CNN (38 k) and the 9.7 M-parameter MLP, float32.
The public key travels once per client, at registration. Anchor side by side: Ed25519.

    .venv/bin/python benchmarks/bench_pqc_fl_bandwidth.py

Writes benchmarks/results/pqc_fl_bandwidth.json.
"""

from __future__ import annotations

import sys

from pqc_fl.bench import bandwidth_table, hardware
from qhybrid.report import markdown_table
from qhybrid.runs import write_results


def main() -> None:
    rows = bandwidth_table()
    ed = next(r for r in rows if r["scheme"] == "ed25519")
    for r in rows:
        r["added_vs_ed25519"] = r["added_B"] / ed["added_B"]
    result = {"command": "python " + " ".join(sys.argv), "hardware": hardware(), "rows": rows}
    write_results("benchmarks/results/pqc_fl_bandwidth.json", result, depends=("pqc_fl",))
    print(markdown_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
