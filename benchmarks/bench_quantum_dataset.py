"""Dataset generation throughput: ``generate_dataset`` against the anchors' Qiskit pipeline.

Ours: 100,000 records (50,000 problems x {qasm3_loop, compact}), n = 2-20, t = 1-6, exact
closed-form targets, token counts, JSONL + Parquet, the Aer cross-check on the first 50 problems
(n <= 6) of each split, two worker processes. Target (issue 4): at most 60 s on two cores.

Baseline (GroverGPT-2's ``dataset_generate_MMS.py`` pipeline): per problem build the circuit with
Qiskit (``build_circuit``: MCMTGate oracle, ``grover_operator`` diffuser), export it with
``qasm3.dumps``, transpile and simulate it with Aer's statevector, write a JSON record of the
probabilities. Measured on a subset: ``--baseline-per-n`` problems for every n = 2..20; Aer's
time above ``--aer-max-iterations`` iterations is scaled linearly in k (each iteration is the same
gates). The baseline's time for the whole dataset is the per-n mean times the dataset's count
of problems with that n; records/s are compared per problem (the baseline writes one record
per problem, ours two).

    .venv/bin/python benchmarks/bench_quantum_dataset.py

Writes benchmarks/results/quantum_dataset.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from qhybrid.runs import atomic_write_json, environment_info
from quantum import GroverProblem
from quantum.dataset import DatasetSpec, SplitSpec, generate_dataset


def bench_spec(workers: int, problems: int) -> DatasetSpec:
    share = problems // 20
    return DatasetSpec(
        seed=0,
        renderings=("qasm3_loop", "compact"),
        train=SplitSpec(2, 20, 1, 3, problems - 4 * share),
        test_id=SplitSpec(2, 20, 1, 3, share),
        test_ood_n=SplitSpec(16, 20, 1, 3, share),
        test_ood_t=SplitSpec(6, 20, 4, 6, share),
        test_ood_k=SplitSpec(2, 20, 1, 3, share, off_optimal=1.0),
        workers=workers,
        shard_size=5000,
    )


def baseline_problem(p: GroverProblem, max_iterations: int) -> float:
    """Seconds for the anchors' pipeline on ``p`` (Aer time scaled to the full k if capped)."""
    from qiskit import qasm3, transpile
    from qiskit_aer import AerSimulator

    from quantum.circuits import build_circuit

    t0 = time.perf_counter()
    qc = build_circuit(p, measure=True)
    text = qasm3.dumps(qc)
    t_export = time.perf_counter() - t0
    k_run = min(p.iterations, max_iterations)
    p_run = GroverProblem(p.n_qubits, list(p.marked), k_run)
    t0 = time.perf_counter()
    sim = AerSimulator(method="statevector", max_parallel_threads=1)
    qc_run = build_circuit(p_run, measure=False)
    qc_run.save_statevector()
    sv = sim.run(transpile(qc_run, sim)).result().get_statevector()
    probs = np.abs(np.asarray(sv)) ** 2
    record = {
        "input": text,
        "output": {
            format(i, f"0{p.n_qubits}b"): float(v) for i, v in enumerate(probs) if v > 1e-12
        },
    }
    json.dumps(record)
    t_sim = time.perf_counter() - t0
    return t_export + t_sim * p.iterations / max(k_run, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=50_000, help="problems (records / 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-per-n", type=int, default=2)
    parser.add_argument("--aer-max-iterations", type=int, default=25)
    parser.add_argument("--out", default="benchmarks/results/quantum_dataset.json")
    args = parser.parse_args()

    spec = bench_spec(args.workers, args.problems)
    tmp = Path(tempfile.mkdtemp(prefix="qhybrid-bench-ds-"))
    try:
        t0 = time.perf_counter()
        info = generate_dataset(spec, tmp / "ds")
        ours_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (tmp / "ds").rglob("*") if f.is_file())
        n_hist: collections.Counter[int] = collections.Counter()
        for f in (tmp / "ds" / "data").rglob("*.jsonl"):
            for line in f.read_text().splitlines()[:: len(spec.renderings)]:
                n_hist[json.loads(line)["n_qubits"]] += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"ours: {info.records} records in {ours_s:.1f} s", flush=True)

    rng = np.random.default_rng(1)
    per_n: dict[int, float] = {}
    for n in sorted(n_hist):
        times = []
        for _ in range(args.baseline_per_n):
            t = int(rng.integers(1, min(3, 2**n - 1) + 1))
            marked = sorted({format(int(i), f"0{n}b") for i in rng.choice(2**n, t, replace=False)})
            times.append(baseline_problem(GroverProblem(n, marked), args.aer_max_iterations))
        per_n[n] = statistics.mean(times)
        print(f"baseline n={n}: {per_n[n]:.3f} s/problem", flush=True)
    problems = sum(n_hist.values())
    baseline_s = sum(per_n[n] * c for n, c in n_hist.items())
    result: dict[str, Any] = {
        "benchmark": "quantum_dataset",
        "command": "python benchmarks/bench_quantum_dataset.py",
        "target": "100,000 records (n=2-20, qasm3_loop + compact, exact targets) in <= 60 s on "
        "two cores",
        "records": info.records,
        "problems": problems,
        "workers": args.workers,
        "ours_s": ours_s,
        "ours_records_per_s": info.records / ours_s,
        "ours_problems_per_s": problems / ours_s,
        "bytes_written": size,
        "target_met": info.records >= 100_000 and ours_s <= 60.0,
        "baseline": {
            "pipeline": "build_circuit + qasm3.dumps + transpile + Aer statevector + JSON",
            "per_n_s": per_n,
            "problems_measured": args.baseline_per_n * len(per_n),
            "aer_max_iterations": args.aer_max_iterations,
            "estimated_s_for_dataset": baseline_s,
            "problems_per_s": problems / baseline_s,
        },
        "speedup_problems_per_s": baseline_s / ours_s,
        "n_histogram": dict(sorted(n_hist.items())),
        "env": environment_info(0),
    }
    atomic_write_json(args.out, result)
    print(
        f"wrote {args.out}: ours {ours_s:.1f} s, baseline ~{baseline_s:.0f} s, "
        f"speedup {baseline_s / ours_s:.0f}x; target met: {result['target_met']}"
    )


if __name__ == "__main__":
    main()
