"""The solve scheduler: per Newton solve, the backend the cost models predict to be cheapest.

Q-Newton (arXiv 2405.00252) proposes a scheduler that sends each Hessian inversion to a quantum
linear solver or a classical one; its released code has none. This one, per solve:

1. takes the block size N, the condition number kappa of the damped block (from
   :func:`newton.spectrum.estimate_condition_number`), its row sparsity d and the precision epsilon;
2. predicts the time of every backend with :mod:`newton.cost` (Cholesky and CG from measured FLOP/s,
   the quantum solver from the query model x block-encoding cost x gate time, plus loading and
   read-out unless ``include_io`` is off; or Q-Newton's unit-cost counts in ``paper_mode``);
3. picks the cheapest (or the forced ``mode``), runs it - the quantum choice runs real HHL on Aer
   for N <= ``hhl_max_n`` and the modelled quantum solver above - and
4. logs the decision: N, kappa, d, epsilon, predicted time of each backend, choice, measured wall
   time, residual (``Scheduler.log`` and the ``newton.scheduler`` logger).

Decisions are deterministic given the inputs and the seed (the measured FLOP/s is fixed once per
process; pass ``ClassicalCostModel(flops=...)`` to pin it across machines).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval

from newton.cost import ClassicalCostModel, QuantumCostModel, QueryModel, paper_mode_costs
from newton.errors import BadValueError, NewtonError
from newton.hhl import HHL_MAX_N
from newton.solvers import cg_solve, cholesky_solve, quantum_model_solve
from newton.systems import SolveInfo
from newton.values import (
    ClockQubits,
    Epsilon,
    Positive,
    Seed,
    Shots,
    Tolerance,
    check_declared,
)

logger = logging.getLogger(__name__)

__all__ = ["Scheduler", "SchedulerConfig"]


SolveMode = Literal["auto", "cholesky", "cg", "quantum"]
KappaPolicy = Literal["proven", "estimate"]
Backend = Literal["cholesky", "cg", "quantum"]


@dataclass(frozen=True)
class SchedulerConfig:
    """How the scheduler chooses and runs a backend."""

    mode: SolveMode = "auto"  # auto = cheapest predicted
    epsilon: Epsilon = 1e-2  # target relative precision of a quantum solve (and CG's cost model)
    query_model: QueryModel = "jennings"  # jennings | jennings_qb | dalzell | hhl (newton.cost)
    gate_time_s: Positive = 1e-6  # logical gate time; 1e-18 is the paper's "attosecond" what-if
    include_io: bool = True  # charge state loading and tomographic read-out to the quantum solver
    paper_mode: bool = False  # Q-Newton's unit-cost rule d kappa log(N kappa/eps) vs N^2.373
    hhl_max_n: Annotated[int, Interval(ge=1, le=HHL_MAX_N)] = (
        16  # quantum choices up to N: HHL on Aer
    )
    simulate_hhl: bool = True  # False: every quantum choice uses the modelled solver
    clock_qubits: ClockQubits = 6  # HHL phase-estimation qubits (the minimum; see max_clock_qubits)
    # a solve whose kappa the clock cannot resolve (newton.hhl.resolvable_kappa) gets more clock
    # qubits, up to this many; beyond that it goes to Cholesky, logged as a classical route
    max_clock_qubits: ClockQubits = 10
    hhl_shots: Shots | None = None  # None = Aer statevector read-out; else shots per circuit
    cg_tol: Tolerance = 1e-8  # CG stopping tolerance (relative residual)
    # "proven": decide on the proven kappa bound; a solve without one never goes to the quantum
    # solver in auto mode (logged). "estimate": decide on the estimate (risk: it can be below
    # the true kappa; logged with every decision).
    kappa_policy: KappaPolicy = "proven"
    seed: Seed = 0  # seeds HHL shots and the modelled solver's error direction

    def __post_init__(self) -> None:
        check_declared(self)
        if self.max_clock_qubits < self.clock_qubits:
            raise BadValueError(
                f"max_clock_qubits={self.max_clock_qubits} must be >= clock_qubits="
                f"{self.clock_qubits} (the clock only grows)"
            )


@dataclass
class _Decision:
    """One solve's decision: its size and kappas, the predictions and the choice."""

    n: int
    d: int
    kappa: float
    kappa_bound: float | None
    kappa_used: float  # what the decision rests on (the proven bound under "proven")
    risk: str  # what kappa_used is: logged as kappa_basis
    predicted: dict[str, float]
    choice: str
    simulate: bool = False  # a quantum choice run as real HHL on Aer
    clock: int = 0  # its clock qubits
    route: str = ""  # why a quantum choice went classical


class Scheduler:
    """Chooses, runs and logs one backend per solve. Holds the decision log."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        classical: ClassicalCostModel | None = None,
        quantum: QuantumCostModel | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.classical = classical or ClassicalCostModel()
        self.quantum = quantum or QuantumCostModel(
            query_model=self.config.query_model,
            gate_time_s=self.config.gate_time_s,
            include_io=self.config.include_io,
        )
        self.log: list[dict[str, Any]] = []
        self._calls = 0

    def predict(self, *, n: int, kappa: float, d: int, dense: bool = True) -> dict[str, float]:
        """Predicted cost of each backend (seconds; unit-cost operations in paper mode)."""
        eps = self.config.epsilon
        kappa = max(1.0, kappa)
        if self.config.paper_mode:
            q, c = paper_mode_costs(n=n, kappa=kappa, d=d, epsilon=eps)
            return {"cholesky": c, "quantum": q}
        out = {"cg": self.classical.cg_s(n, d=d, kappa=kappa, epsilon=eps)}
        if dense:
            out["cholesky"] = self.classical.cholesky_s(n)
        out["quantum"] = self.quantum.estimate(n=n, kappa=kappa, d=d, epsilon=eps).total_s
        return out

    def choose(self, predicted: dict[str, float]) -> str:
        """The forced ``mode``, else the backend with the smallest predicted cost (ties by name)."""
        if self.config.mode != "auto":
            return self.config.mode
        return min(predicted, key=lambda k: (predicted[k], k))

    def solve(
        self,
        a: np.ndarray | None,
        b: np.ndarray,
        *,
        kappa: float,
        kappa_bound: float | None = None,
        d: int | None = None,
        matvec: Callable[[np.ndarray], np.ndarray] | None = None,
        lambda_bounds: tuple[float, float] | None = None,
        tag: str = "",
    ) -> tuple[np.ndarray, SolveInfo]:
        """Solve ``a x = b`` (dense ``a``, or ``matvec`` for matrix-free CG) on the chosen backend.

        Args:
            a: dense SPD block, or None for a matrix-free block (then only CG and the modelled
                quantum solver with a densified fallback are possible: CG is used).
            b: right-hand side.
            kappa: condition number of the block (an estimate).
            kappa_bound: a proven upper bound on it, or None; see ``SchedulerConfig.kappa_policy``.
            d: row sparsity; counted from ``a`` when None (N for matrix-free).
            matvec: ``v -> a v`` for matrix-free blocks.
            lambda_bounds: eigenvalue bounds handed to HHL (its scaling constants).
            tag: a label for the log (e.g. the parameter block's name).
        """
        n = int(b.shape[0])
        dense = a is not None
        if d is None:
            d = int((a != 0).sum(axis=1).max()) if a is not None else n
        if not math.isfinite(kappa) or kappa < 1:
            raise NewtonError(
                f"kappa={kappa} must be finite and >= 1; use estimate_condition_number"
            )
        if kappa_bound is not None and not (math.isfinite(kappa_bound) and kappa_bound >= 1):
            raise NewtonError(f"kappa_bound={kappa_bound} must be finite and >= 1, or None")
        decision = self._decide(
            n=n, kappa=kappa, kappa_bound=kappa_bound, d=d, dense=dense, tag=tag
        )
        seed = self.config.seed + self._calls
        self._calls += 1
        t0 = time.perf_counter()
        x, info = self._run(decision, a, b, matvec=matvec, lambda_bounds=lambda_bounds, seed=seed)
        wall = time.perf_counter() - t0
        info.kappa, info.d, info.epsilon = decision.kappa_used, d, self.config.epsilon
        info.predicted_s = dict(decision.predicted)
        record = self._record(decision, a, b, x, info, wall=wall, tag=tag)
        self.log.append(record)
        logger.debug("solve %s", record)
        return x, info

    def _decide(
        self, *, n: int, kappa: float, kappa_bound: float | None, d: int, dense: bool, tag: str
    ) -> _Decision:
        """Steps 1-3 of the module docstring: the kappa the decision rests on, the predictions,
        the choice, and for a simulated HHL solve the clock (or a classical route)."""
        cfg = self.config
        proven = cfg.kappa_policy == "proven" and kappa_bound is not None
        kappa_used = max(kappa, kappa_bound) if proven and kappa_bound is not None else kappa
        predicted = self.predict(n=n, kappa=kappa_used, d=d, dense=dense)
        choice = self.choose(predicted)
        risk = "proven kappa bound" if proven else "kappa estimate (may be below the true kappa)"
        if cfg.kappa_policy == "proven" and kappa_bound is None and cfg.mode == "auto":
            classical = {k: v for k, v in predicted.items() if k != "quantum"}
            choice = self.choose(classical) if classical else "cg"
            risk = "no proven kappa: quantum excluded"
        if choice == "cholesky" and not dense:
            choice = "cg"
        decision = _Decision(n, d, kappa, kappa_bound, kappa_used, risk, predicted, choice)
        decision.simulate = (
            choice == "quantum" and dense and n <= cfg.hhl_max_n and cfg.simulate_hhl
        )
        if decision.simulate:
            from newton.hhl import resolvable_kappa

            clock = cfg.clock_qubits
            while clock < cfg.max_clock_qubits and resolvable_kappa(clock) < kappa_used:
                clock += 1
            decision.clock = clock
            if resolvable_kappa(clock) < kappa_used:  # beyond the clock's reach: classical
                decision.choice, decision.simulate = "cholesky", False
                decision.route = (
                    f"kappa {kappa_used:.3g} > {resolvable_kappa(clock):.3g} resolvable "
                    f"with {clock} clock qubits: classical route"
                )
                logger.info("solve %s: %s", tag, decision.route)
        return decision

    def _run(
        self,
        decision: _Decision,
        a: np.ndarray | None,
        b: np.ndarray,
        *,
        matvec: Callable[[np.ndarray], np.ndarray] | None,
        lambda_bounds: tuple[float, float] | None,
        seed: int,
    ) -> tuple[np.ndarray, SolveInfo]:
        """Step 3: run the chosen backend."""
        cfg, n = self.config, decision.n
        if decision.simulate:
            from newton.hhl import hhl_solve

            assert a is not None
            return hhl_solve(
                a,
                b,
                clock_qubits=decision.clock,
                shots=cfg.hhl_shots,
                seed=seed,
                lambda_bounds=lambda_bounds,
            )
        if decision.choice == "quantum":
            mat = a if a is not None else _densify(matvec, n)
            return quantum_model_solve(
                mat,
                b,
                epsilon=cfg.epsilon,
                seed=seed,
                kappa=decision.kappa,
                d=decision.d,
                cost_model=self.quantum,
            )
        if decision.choice == "cholesky":
            return cholesky_solve(a, b)
        return cg_solve(a if matvec is None else matvec, b, n=n, tol=cfg.cg_tol)

    def _record(
        self,
        decision: _Decision,
        a: np.ndarray | None,
        b: np.ndarray,
        x: np.ndarray,
        info: SolveInfo,
        *,
        wall: float,
        tag: str,
    ) -> dict[str, Any]:
        """Step 4: the log record of one solve (with its accuracy for quantum answers)."""
        record = {
            "solve": len(self.log),
            "tag": tag,
            "n": decision.n,
            "kappa": decision.kappa,
            "kappa_bound": decision.kappa_bound,
            "kappa_used": decision.kappa_used,
            "kappa_basis": decision.risk,
            "d": decision.d,
            "epsilon": self.config.epsilon,
            **{f"pred_{k}": v for k, v in decision.predicted.items()},
            "choice": decision.choice,
            "backend": info.backend,
            "wall_s": wall,
            "residual": info.residual,
            "p_success": info.p_success,
            "route": decision.route,
        }
        if info.backend == "hhl_aer":
            record["clock_qubits"] = decision.clock
            for key in ("p_success_amplified", "aa_rounds", "aa_circuit_uses", "kappa_resolvable"):
                record[key] = info.extra[key]
        if info.backend in ("hhl_aer", "quantum_model") and a is not None and decision.n <= 512:
            # accuracy of the quantum answer against the classical one (not used by the step)
            exact = np.linalg.solve(a, b)
            den = float(np.linalg.norm(x) * np.linalg.norm(exact))
            record["fidelity"] = float((x @ exact) ** 2 / den**2) if den > 0 else 1.0
            scale = max(float(np.linalg.norm(exact)), 1e-300)
            record["rel_error"] = float(np.linalg.norm(x - exact)) / scale
        return record

    def summary(self) -> dict[str, Any]:
        """Counts of backends used and total measured time."""
        counts: dict[str, int] = {}
        for r in self.log:
            counts[r["backend"]] = counts.get(r["backend"], 0) + 1
        return {
            "solves": len(self.log),
            "backends": counts,
            "wall_s": sum(r["wall_s"] for r in self.log),
        }


def _densify(matvec: Callable[[np.ndarray], np.ndarray] | None, n: int) -> np.ndarray:
    if matvec is None:
        raise NewtonError("a matrix-free solve needs matvec")
    return np.stack([matvec(e) for e in np.eye(n)], axis=1)
