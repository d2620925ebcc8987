"""Rejecting a forged update costs the same whatever its tensor-record count (parse after verify).

A 1.2 MB blob of 40,000 empty tensor records behind a valid header and a garbled ML-DSA-44
signature, and the same with 1,000 and 10,000 records, are verified (a) with the default policy
(the record count is read from the stream's 4-byte head and capped at 4,096: ``too_large``) and
(b) with the cap lifted to 10^6, so that the signature check itself rejects (``bad_signature``).
For comparison, the time to parse all records (what the server paid before: the old verifier
parsed every record before the signature) is timed on the same blobs.

    .venv/bin/python benchmarks/bench_pqc_fl_rejection.py

Writes benchmarks/results/pqc_fl_rejection.json. Target: <= 5 ms for the 1 MB blob, flat in the
record count.
"""

from __future__ import annotations

import sys

from pqc_fl.attacks import garbage_record_blob, make_world
from pqc_fl.bench import hardware, time_call
from pqc_fl.policy import ReplayGuard, ServerPolicy, schema_of
from pqc_fl.verify import verify_update
from pqc_fl.wire import parse_tensor_stream, split_wire
from qhybrid.report import markdown_table
from qhybrid.runs import write_results


def main() -> None:
    w = make_world("ml-dsa-44", "digest")
    schema = schema_of(w.state)
    roomy = ServerPolicy.only("ml-dsa-44", max_records=10**6)
    rows = []
    for records in (1_000, 10_000, 40_000):
        blob = garbage_record_blob(w.honest(), records)
        row: dict = {"records": records, "blob_MB": len(blob) / 1e6}
        for name, policy in (("default policy", w.policy), ("cap lifted", roomy)):

            def run(policy: ServerPolicy = policy, blob: bytes = blob) -> str:
                return str(
                    verify_update(
                        blob,
                        registry=w.registry,
                        run_id="run-attack-suite",
                        round=5,
                        guard=ReplayGuard(),
                        schema=schema,
                        policy=policy,
                        node="node-a",
                    ).reason
                )

            row[f"{name}: reason"] = run()
            t = time_call(run, budget_s=0.5)
            row[f"{name}: ms"] = 1e3 * t["median"]
        stream = split_wire(blob)[2]
        t = time_call(lambda s=stream: parse_tensor_stream(s), budget_s=1.0)
        row["parse all records (old order): ms"] = 1e3 * t["median"]
        rows.append(row)
        print(row, flush=True)
    big = rows[-1]
    result = {
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "rows": rows,
        "target_ms": 5.0,
        "target_met": all(r["default policy: ms"] <= 5 and r["cap lifted: ms"] <= 5 for r in rows),
        "flat_ratio_40k_vs_1k": big["cap lifted: ms"] / rows[0]["cap lifted: ms"],
    }
    write_results("benchmarks/results/pqc_fl_rejection.json", result, depends=("pqc_fl",))
    print(markdown_table(rows, floatfmt=".3g"))
    print(f"target met: {result['target_met']}")


if __name__ == "__main__":
    main()
