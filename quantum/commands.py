"""``qhybrid grover ...``: generate datasets, simulate and render single problems.

Light on purpose: Qiskit, transformers and datasets are imported inside the commands.

Examples::

    qhybrid grover generate --set seed=1 --set train.count=5000 --dataset-dir data/grover
    qhybrid grover simulate --n 5 --marked 01101,10010 --backend aer --shots 1000 --seed 1
    qhybrid grover render --n 5 --marked 01101,10010 --format compact
    qhybrid grover import circuit.qasm --top 4
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qhybrid.config import add_config_arguments


def _problem_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, required=True, help="number of search qubits")
    p.add_argument("--marked", required=True, help="comma-separated bitstrings, qubit 0 rightmost")
    p.add_argument(
        "--iterations", type=int, default=None, help="k (default: floor(pi/4 sqrt(N/t)))"
    )
    p.add_argument("--style", default="x_mcz_x", help="oracle style (x_mcz_x, mcp_flag, ...)")


def _problem(args: argparse.Namespace) -> Any:
    from quantum.problem import GroverProblem

    marked = [s.strip() for s in args.marked.split(",") if s.strip()]
    return GroverProblem(args.n, marked, args.iterations, args.style)


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run
    from quantum.dataset import DatasetSpec, check_output, draw_splits, generate_dataset

    spec = config_from_args(DatasetSpec, args)
    # Check before the run folder exists, so a corrected command is never refused.
    if args.dataset_dir:
        check_output(spec, args.dataset_dir)
    else:
        draw_splits(spec)
    run = create_run("grover-generate", spec, root=args.out, seed=spec.seed)
    target = Path(args.dataset_dir) if args.dataset_dir else run.artefact("dataset")
    info = generate_dataset(spec, target)
    run.log_metrics(
        {"records": info.records, **{f"records_{k}": v for k, v in info.splits.items()}}
    )
    print(f"dataset: {info.out_dir} ({info.records} records: {info.splits})")
    print(f"run: {run.path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from qhybrid.errors import QHybridError
    from quantum.simulate import depolarizing_noise, simulate

    problem = _problem(args)
    if args.top < 1:
        raise QHybridError(f"--top {args.top} must be >= 1 (how many probabilities to print)")
    noise = depolarizing_noise(args.noise) if args.noise else None
    out = simulate(
        problem, args.backend, shots=args.shots, seed=args.seed, device=args.device, noise=noise
    )
    if isinstance(out, dict):
        result = out
    else:
        top = np.argsort(-out, kind="stable")[: args.top]
        result = {format(int(i), f"0{problem.n_qubits}b"): float(out[i]) for i in top}
    print(
        json.dumps(
            {"problem": problem.to_dict(), "backend": args.backend, "result": result}, indent=1
        )
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    from quantum.render import render

    print(render(_problem(args), args.format))
    return 0


def _import(args: argparse.Namespace) -> int:
    import numpy as np

    from qhybrid.config import resolve_config
    from qhybrid.errors import QHybridError
    from quantum.qasm_import import QasmLimits, import_grover_file

    if args.top < 0:
        raise QHybridError(f"--top {args.top} must be >= 0 (how many probabilities to print)")
    found = import_grover_file(
        args.file,
        limits=resolve_config(QasmLimits, None, args.overrides),
        iterations=args.iterations,
        oracle_gate=args.oracle_gate,
        flag_qubits=args.flag_qubits,
        simulate=args.simulate,
    )
    dist = found.distribution()
    n, marked = dist.n_qubits, list(dist.marked)
    rest = (format(i, f"0{n}b") for i in range(min(2**n, args.top + len(marked))))
    shown = [s for s in dict.fromkeys([*marked, *rest])][: args.top]
    out = {
        "problem": found.problem.to_dict(),
        "search_qubits": list(found.search_qubits),
        "num_qubits": found.num_qubits,
        "oracle_only": found.oracle_only,
        "verified": list(found.verified),
        "aer_max_abs_diff": found.aer_max_abs_diff,
        "distribution": dist.to_dict(),
        "top": {s: float(np.float64(dist.probability(s))) for s in shown},
    }
    print(json.dumps(out, indent=1))
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="grover_command", metavar="SUBCOMMAND")
    gen = sub.add_parser(
        "generate",
        help="generate a Grover dataset (five key-disjoint splits, JSONL + Parquet, card)",
        description="Generate a dataset from a DatasetSpec (quantum.dataset); keys via --set, "
        "e.g. --set seed=1 --set train.count=5000 --set 'renderings=[\"compact\"]'.",
    )
    add_config_arguments(gen, "quantum.dataset:DatasetSpec")
    gen.add_argument(
        "--dataset-dir",
        default=None,
        help="write the dataset here (resumable: rerun the same command to finish it); "
        "default: <run folder>/dataset",
    )
    gen.set_defaults(func=_generate)

    sim = sub.add_parser("simulate", help="output distribution of one problem")
    _problem_arguments(sim)
    sim.add_argument("--backend", default="auto", help="auto, analytic, statevector or aer")
    sim.add_argument("--shots", type=int, default=None, help="sample counts instead of probs")
    sim.add_argument("--seed", type=int, default=None, help="sampling seed")
    sim.add_argument("--device", default="cpu", help="cpu or cuda (statevector backend)")
    sim.add_argument("--noise", type=float, default=0.0, help="Aer depolarizing error p (1q)")
    sim.add_argument("--top", type=int, default=16, help="print the top-N probabilities")
    sim.set_defaults(func=_simulate)

    ren = sub.add_parser("render", help="print one problem as qasm3/qasm3_loop/.../compact")
    _problem_arguments(ren)
    ren.add_argument(
        "--format", default="compact", help="qasm3, qasm3_loop, qasm3_oracle, compact or answer"
    )
    ren.set_defaults(func=_render)

    imp = sub.add_parser(
        "import",
        help="read an OpenQASM 3 file and print the Grover problem it provably computes",
        description="Parse an OpenQASM 3 file (bounded: size, statements, qubits, gates), prove "
        "it is Grover search (Hadamard start, k oracle/reflection pairs, one marked set) and "
        "print the problem and its exact distribution; anything else exits 2 with the reason.",
    )
    imp.add_argument("file", help="an OpenQASM 3 file (a full circuit or a gate Oracle definition)")
    imp.add_argument("--top", type=int, default=8, help="print this many outcome probabilities")
    imp.add_argument(
        "--iterations", type=int, default=None, help="oracle-only input: k (default k*)"
    )
    imp.add_argument("--oracle-gate", default="Oracle", help="oracle-only input: the gate's name")
    imp.add_argument(
        "--flag-qubits", type=int, default=0, help="oracle-only: trailing flags in |1>"
    )
    imp.add_argument(
        "--simulate",
        default="auto",
        help="Aer cross-check of the whole circuit: auto, always, never",
    )
    imp.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a bound of quantum.qasm_import.QasmLimits, e.g. max_probe_qubits=27 (repeatable)",
    )
    imp.set_defaults(func=_import)
