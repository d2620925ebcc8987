"""``qhybrid newton ...``: the Newton experiments from the command line (heavy imports inside).

    qhybrid newton compare  [--set hidden=64 --set epochs=10 --set dataset="mnist" --set mnist_dir="..."]
    qhybrid newton hhl-loop [--set steps=8 --set clock_qubits=8]
    qhybrid newton crossover [--set d=16]
    qhybrid newton noise    [--set steps=40]
    qhybrid newton solve    [--set n=8 --set kappa=10 --set backend="hhl"]   one solve, logged

Each writes ``runs/newton-<what>-<time>/`` with config.json, env.json, metrics.jsonl, JSON results,
PNG figures and report.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Literal

from newton.errors import BadValueError
from newton.values import (
    DEFAULT_MAX_CPU_S,
    DEFAULT_MAX_MEMORY_GB,
    FLOPS,
    ClockQubits,
    Count,
    CpuSeconds,
    Epsilon,
    Kappa,
    MemoryGB,
    Seed,
    ShotsOrZero,
    check_declared,
    check_work,
)
from qhybrid.config import add_config_arguments, config_from_args

__all__ = ["SolveConfig", "register"]

SolveBackend = Literal["auto", "cholesky", "cg", "hhl", "quantum_model"]


@dataclass(frozen=True)
class SolveConfig:
    """One linear solve on a random SPD system, for trying the backends."""

    n: Count = 8  # system size
    kappa: Kappa = 10.0  # condition number of the random SPD matrix
    backend: SolveBackend = "auto"  # auto (scheduler) | cholesky | cg | hhl | quantum_model
    clock_qubits: ClockQubits = 6  # HHL phase-estimation qubits
    shots: ShotsOrZero = 0  # HHL shots (0 = statevector)
    epsilon: Epsilon = 1e-2  # target precision (quantum model and scheduler)
    seed: Seed = 0
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse solves estimated above (CPU-core s)
    max_memory_gb: MemoryGB = DEFAULT_MAX_MEMORY_GB  # refuse solves estimated above (GB)

    def __post_init__(self) -> None:
        from newton.hhl import HHL_MAX_N

        check_declared(self)
        if self.backend == "hhl" and self.n > HHL_MAX_N:
            raise BadValueError(
                f"backend='hhl' simulates N <= {HHL_MAX_N}, got n={self.n}; use a smaller n or "
                "backend='quantum_model' (the modelled quantum solver)"
            )
        # a random orthogonal basis (QR), the matrix, the solve and its check: about 5 n^3 flops
        # (float64, at a fifth of FLOPS) on about five n x n arrays
        check_work(
            5.0 * self.n**3 / (FLOPS / 5),
            5 * 8 * self.n**2 / 1e9,
            max_cpu_s=self.max_cpu_s,
            max_memory_gb=self.max_memory_gb,
            what="this solve",
            drivers=f"a dense {self.n} x {self.n} system",
        )


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``qhybrid newton`` experiments (each with ``--config/--set/--out``) to ``parser``."""
    sub = parser.add_subparsers(dest="newton_command", metavar="EXPERIMENT")
    specs = [
        (
            "compare",
            "QNewton vs SGD vs Adam on an MLP (digits or local MNIST)",
            _compare,
            "newton.experiments:CompareConfig",
        ),
        (
            "hhl-loop",
            "a <=16-parameter model trained with every solve by HHL on Aer",
            _hhl_loop,
            "newton.experiments:HHLLoopConfig",
        ),
        (
            "crossover",
            "problem size where the quantum solver wins, vs kappa and gate time",
            _crossover,
            "newton.experiments:CrossoverConfig",
        ),
        (
            "noise",
            "training with injected solve errors of relative size epsilon",
            _noise,
            "newton.experiments:NoiseConfig",
        ),
        (
            "solve",
            "one solve of a random SPD system on a chosen backend",
            _solve,
            "newton.commands:SolveConfig",
        ),
    ]
    for name, help_text, fn, config in specs:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(p, config)
        p.set_defaults(func=fn)


def _finish(run: Any, title: str, section: Any) -> int:
    from qhybrid.report import write_report

    path = write_report(run, title, [section])
    print(f"report: {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from newton.experiments import CompareConfig, compare_optimizers, make_task, plot_compare
    from qhybrid.report import Section
    from qhybrid.runs import atomic_write_json, check_root, fresh_run

    cfg = config_from_args(CompareConfig, args)
    check_root(args.out)
    task = make_task(cfg)  # the data (local MNIST files) is read before a run folder exists
    with fresh_run("newton-compare", cfg, root=args.out, seed=cfg.seed) as run:
        res = compare_optimizers(cfg, task)
        atomic_write_json(run.artefact("compare.json"), res)
    for name, rows in res["curves"].items():
        for r in rows:
            run.log_metrics({"optimizer": name, **r})
    sec = Section("QNewton vs SGD vs Adam")
    sec.add_table("Summary", res["summary"])
    sec.add_figure(
        "Loss/accuracy vs epochs and wall time; kappa",
        run.save_figure(plot_compare(res), "figures/newton_compare"),
    )
    for r in res["summary"]:
        print(r)
    return _finish(run, "Newton: optimizer comparison", sec)


HHL_KEYS = (
    "n_params",
    "relative_gap",
    "max_rel_error",
    "kappa_target",
    "hhl_solves",
    "classical_routes",
    "min_fidelity",
    "mean_p_success",
    "min_p_success_amplified",
)


def _hhl_loop(args: argparse.Namespace) -> int:
    from newton.experiments import HHLLoopConfig, hhl_in_the_loop, plot_hhl_loop
    from qhybrid.report import Section
    from qhybrid.runs import atomic_write_json, fresh_run

    cfg = config_from_args(HHLLoopConfig, args)
    with fresh_run("newton-hhl-loop", cfg, root=args.out, seed=cfg.seed) as run:
        res = hhl_in_the_loop(cfg)
        atomic_write_json(run.artefact("hhl_loop.json"), res)
    for rec in res["runs"]["quantum"]["solves"]:
        run.log_metrics(rec)
    row = {k: res[k] for k in HHL_KEYS}
    row.update({f"final_loss_{m}": res["runs"][m]["final_loss"] for m in res["runs"]})
    sec = Section("HHL in the loop")
    sec.add_table("Exact Newton vs HHL Newton", [row])
    sec.add_figure(
        "Train loss per Newton step", run.save_figure(plot_hhl_loop(res), "figures/newton_hhl_loop")
    )
    print(row)
    return _finish(run, "Newton: HHL in the loop", sec)


def _crossover(args: argparse.Namespace) -> int:
    from newton.experiments import CrossoverConfig, crossover_curves, plot_crossover
    from qhybrid.report import Section
    from qhybrid.runs import atomic_write_json, fresh_run

    cfg = config_from_args(CrossoverConfig, args)
    with fresh_run("newton-crossover", cfg, root=args.out) as run:
        res = crossover_curves(cfg)
        atomic_write_json(run.artefact("crossover.json"), res)
    sec = Section("Crossover")
    sec.add_table(
        "Paper mode: largest kappa still sent to the quantum solver (dense N x N)",
        res["paper_mode"],
    )
    sec.add_figure(
        "Crossover N* vs kappa", run.save_figure(plot_crossover(res), "figures/newton_crossover")
    )
    print(res["paper_mode"])
    return _finish(run, "Newton: crossover", sec)


def _noise(args: argparse.Namespace) -> int:
    from newton.experiments import NoiseConfig, noise_robustness, plot_noise
    from qhybrid.report import Section
    from qhybrid.runs import atomic_write_json, fresh_run

    cfg = config_from_args(NoiseConfig, args)
    with fresh_run("newton-noise", cfg, root=args.out, seed=cfg.seed) as run:
        res = noise_robustness(cfg)
        atomic_write_json(
            run.artefact("noise.json"),
            {"rows": res["rows"], "curves": {str(k): v for k, v in res["curves"].items()}},
        )
    sec = Section("Injected solve errors")
    sec.add_table("Slowdown to the target loss", res["rows"])
    sec.add_figure("Train loss per step", run.save_figure(plot_noise(res), "figures/newton_noise"))
    for r in res["rows"]:
        print(r)
    return _finish(run, "Newton: solve-error robustness", sec)


def _solve(args: argparse.Namespace) -> int:
    import numpy as np

    from newton.scheduler import Scheduler, SchedulerConfig
    from newton.solvers import solve
    from newton.spectrum import estimate_condition_number

    cfg = config_from_args(SolveConfig, args)
    rng = np.random.default_rng(cfg.seed)
    q, _ = np.linalg.qr(rng.standard_normal((cfg.n, cfg.n)))
    a = (q * np.geomspace(1.0, cfg.kappa, cfg.n)) @ q.T
    a = (a + a.T) / 2
    b = rng.standard_normal(cfg.n)
    if cfg.backend == "auto":
        est = estimate_condition_number(a)
        x, info = Scheduler(
            SchedulerConfig(
                epsilon=cfg.epsilon,
                clock_qubits=cfg.clock_qubits,
                max_clock_qubits=max(10, cfg.clock_qubits),
            )
        ).solve(a, b, kappa=est.kappa, kappa_bound=est.upper_bound if est.certified else None)
    else:
        opts: dict[str, Any] = {}
        if cfg.backend == "hhl":
            opts = {"clock_qubits": cfg.clock_qubits, "shots": cfg.shots or None, "seed": cfg.seed}
        elif cfg.backend == "quantum_model":
            opts = {"epsilon": cfg.epsilon, "seed": cfg.seed}
        x, info = solve(a, b, cfg.backend, **opts)
    exact = np.linalg.solve(a, b)
    fid = float((x @ exact) ** 2 / (x @ x) / (exact @ exact))
    print({**info.as_record(), "fidelity": fid})
    return 0
