"""Reproduce stage ``quantum``: a small Grover dataset, rendering lengths, exact vs Aer curves.

1. Generates a dataset with the five key-disjoint splits (``generate_dataset``) and tabulates
   records per split, qubit and marked-count ranges and mean tokens per rendering.
2. Tabulates rendering lengths (tokens of ``quantum.build_tokenizer``) against n: the unrolled
   GroverGPT-2 QASM grows like sqrt(2**n), the loop QASM and the compact form do not.
3. Plots success probability against the iteration count for a few n: the closed form
   sin^2((2k+1) theta) as lines, Qiskit Aer statevector runs of the built circuits as markers,
   and one noisy Aer curve (depolarizing noise, density matrix).
4. Checks every backend against the others on a handful of problems.

Puts ``{"dataset": <dir>, "tokenizer": <dir>}`` into ``context["quantum"]`` for the llm stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Interval, MinLen

from qhybrid.config import check_fields
from qhybrid.report import Section
from qhybrid.runs import Run

TITLE = "Quantum: Grover problems, exact simulation, datasets"


@dataclass(frozen=True)
class StageConfig:
    train_count: Annotated[int, Ge(1)] = (
        3000  # train problems (n = 2-6, t = 1-12); records = problems x renderings
    )
    test_count: Annotated[int, Ge(1)] = 120  # problems in test_id, test_ood_t and test_ood_k
    ood_n_max: Annotated[int, Interval(ge=7, le=60)] = (
        20  # largest n in test_ood_n (n = 7..ood_n_max, t = 1-6)
    )
    ood_n_count: Annotated[int, Ge(1)] = 280  # problems in test_ood_n, half at a non-optimal k
    curve_qubits: Annotated[tuple[int, ...], MinLen(1)] = (
        3,
        4,
        5,
        6,
    )  # n of the success-vs-iterations curves
    curve_max_iterations: Annotated[int, Interval(ge=0, le=1000)] = (
        14  # k from 0 to this on the curves
    )
    noise_p1: Annotated[float, Interval(ge=0, le=0.075)] = (
        0.002  # depolarizing error of the noisy Aer curve (2-qubit: 10x)
    )
    length_qubits: tuple[int, ...] = (3, 6, 10, 14, 20)  # n of the rendering-length table
    qasm3_max_n: Annotated[int, Ge(1)] = (
        14  # the unrolled QASM is only exported up to this n (it gets long)
    )

    def __post_init__(self) -> None:
        check_fields(self)


def _dataset_table(manifest: dict[str, Any], spec: Any) -> list[dict[str, Any]]:
    rows = []
    for name, s in manifest["splits"].items():
        row = {
            "split": name,
            "problems": s["problems"],
            "records": s["records"],
            "n": f"{s['n_range'][0]}-{s['n_range'][1]}",
            "t": f"{s['t_range'][0]}-{s['t_range'][1]}",
            "k": spec.split(name).k_regime,
        }
        row.update({f"tokens {f}": v for f, v in s["mean_tokens"].items()})
        row["tokens answer"] = s["mean_target_tokens"]
        row["Aer-checked"] = s["aer_checked"]
        rows.append(row)
    return rows


def _length_table(config: StageConfig) -> list[dict[str, Any]]:
    from quantum.problem import GroverProblem
    from quantum.render import render
    from quantum.tokenizer import count_tokens

    rows = []
    for n in config.length_qubits:
        p = GroverProblem(n, ["1" * n])
        row: dict[str, Any] = {"n": n, "k": p.iterations}
        for fmt in ("qasm3", "qasm3_loop", "qasm3_oracle", "compact", "answer"):
            if fmt == "qasm3" and n > config.qasm3_max_n:
                row[f"{fmt} tokens"] = "-"
                continue
            row[f"{fmt} tokens"] = count_tokens(render(p, fmt))
        rows.append(row)
    return rows


def _agreement_table() -> list[dict[str, Any]]:
    from qiskit.quantum_info import Statevector

    from quantum.circuits import build_circuit
    from quantum.problem import GroverProblem
    from quantum.simulate import simulate

    problems = [
        GroverProblem(3, ["101"], oracle_style="x_mcz_x"),
        GroverProblem(4, ["0011", "1100"], oracle_style="mcp_flag"),
        GroverProblem(5, ["00111", "11000", "10101"], oracle_style="phase_oracle"),
        GroverProblem(6, ["010101"], iterations=9, oracle_style="diagonal"),
        GroverProblem(12, ["101010101010", "000000000001"]),
    ]
    rows = []
    for p in problems:
        exact = simulate(p, "analytic")
        qiskit = Statevector(build_circuit(p, measure=False)).probabilities(list(range(p.n_qubits)))
        rows.append(
            {
                "n": p.n_qubits,
                "t": p.n_marked,
                "k": p.iterations,
                "oracle": p.oracle_style,
                "|statevector - exact|": float(np.abs(simulate(p, "statevector") - exact).max()),
                "|aer - exact|": float(np.abs(simulate(p, "aer") - exact).max()),
                "|qiskit Statevector - exact|": float(np.abs(qiskit - exact).max()),
            }
        )
    return rows


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quantum.dataset import DatasetSpec, SplitSpec, generate_dataset
    from quantum.problem import ORACLE_STYLES, GroverProblem
    from quantum.simulate import depolarizing_noise, simulate, two_level
    from quantum.tokenizer import build_tokenizer

    t0 = time.perf_counter()
    # The llm stage trains on this dataset: long flip sections (t up to 12) at n <= 6, every
    # oracle style, and non-optimal k in training so that test_ood_k is in distribution.
    spec = DatasetSpec(
        seed=seed,
        renderings=("compact",),  # the length table below covers the QASM renderings
        oracle_styles=ORACLE_STYLES,
        train=SplitSpec(2, 6, 1, 12, config.train_count, off_optimal=0.6, k_draw="both"),
        test_id=SplitSpec(2, 6, 1, 12, config.test_count),
        test_ood_n=SplitSpec(7, config.ood_n_max, 1, 6, config.ood_n_count, off_optimal=0.5),
        test_ood_t=SplitSpec(5, 6, 13, 16, config.test_count),
        test_ood_k=SplitSpec(2, 6, 1, 6, config.test_count, off_optimal=1.0),
    )
    data_dir = run.artefact("quantum", "dataset")
    info = generate_dataset(spec, data_dir)
    t_data = time.perf_counter() - t0
    tok_dir = run.artefact("quantum", "tokenizer")
    build_tokenizer().save_pretrained(str(tok_dir))

    # success probability vs iterations: closed form (lines) against Aer (markers)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    max_diff = 0.0
    ks = np.arange(config.curve_max_iterations + 1)
    rng = np.random.default_rng(seed)
    for n in config.curve_qubits:
        marked = format(int(rng.integers(2**n)), f"0{n}b")
        fine = np.linspace(0, config.curve_max_iterations, 400)
        theta = np.arcsin(np.sqrt(1 / 2**n))
        (line,) = ax.plot(fine, np.sin((2 * fine + 1) * theta) ** 2, lw=1, label=f"n={n} exact")
        aer = []
        for k in ks:
            p = GroverProblem(n, [marked], int(k))
            probs = simulate(p, "aer")
            aer.append(probs[int(marked, 2)])
            max_diff = max(max_diff, float(np.abs(probs - two_level(p).dense()).max()))
        ax.plot(ks, aer, "o", ms=4, color=line.get_color(), label=f"n={n} Aer")
    n0 = config.curve_qubits[0]
    noise = depolarizing_noise(config.noise_p1)
    noisy = [
        simulate(GroverProblem(n0, ["1" * n0], int(k)), "aer", noise=noise)[2**n0 - 1] for k in ks
    ]
    ax.plot(
        ks, noisy, "x--", ms=5, color="gray", label=f"n={n0} Aer, depolarizing p={config.noise_p1}"
    )
    ax.set(xlabel="Grover iterations k", ylabel="success probability", ylim=(-0.02, 1.05))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig_path = run.save_figure(fig, "figures/quantum_success_vs_iterations")

    section = Section(
        TITLE,
        text=(
            f"Dataset of {info.records} records ({sum(info.problems.values())} problems x "
            f"{len(spec.renderings)} renderings) generated in {t_data:.1f} s, splits disjoint on "
            "the marked set; targets are the closed form and were cross-checked against Qiskit "
            f"Aer for the first {spec.aer_check_per_split} problems (n <= {spec.aer_check_max_n}) "
            f"of each split. Exact vs Aer on the curves: max |diff| = {max_diff:.1e}."
        ),
    )
    section.add_table(
        "Dataset splits (mean tokens per record)", _dataset_table(info.manifest, spec)
    )
    section.add_table(
        "Rendering length in tokens (t = 1, optimal k): the unrolled QASM grows with k",
        _length_table(config),
    )
    section.add_table("Backends against each other (max |p - p_exact|)", _agreement_table())
    section.add_figure(
        "Success probability vs Grover iterations: closed form (lines), Aer (markers)", fig_path
    )
    section.headline = (
        f"{info.records} records in {t_data:.0f} s; closed form vs Aer max |diff| {max_diff:.1e}"
    )
    run.log_metrics({"stage": "quantum", "records": info.records, "aer_max_abs_diff": max_diff})
    context["quantum"] = {"dataset": str(data_dir), "tokenizer": str(tok_dir)}
    return section
