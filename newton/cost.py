"""Cost models of classical and quantum linear solves, with every constant explicit.

Classical (seconds on this machine):
    Cholesky  T = (N^3 / 3 + 2 N^2) / F                       F = measured float64 FLOP/s
    CG        T = ceil(sqrt(kappa) ln(2 / eps)) * 2 nnz / F    nnz = N d

Quantum (seconds on a hypothetical fault-tolerant machine):
    T_run  = Q(kappa_eff, eps) * c_BE(N) * t_gate + T_load(N)
    T      = T_run * shots,   shots = ceil(N / eps^2) to read the vector out (tomography),
    with ``kappa_eff = alpha kappa`` (alpha = block-encoding subnormalisation, sqrt(d) by default:
    a d-sparse access encoding has alpha = d max|A_ij| / ||A||), ``c_BE = gates_per_query *
    ceil(log2 N)`` gates per block-encoding call, ``T_load = load_gates_per_entry * N * t_gate``.

Query models Q (pluggable, see :data:`QUERY_MODELS`):
    "jennings"     closed-form bound of Jennings et al., arXiv 2305.11352, as transcribed in Q-Newton's
                   code (``qnewton_utils.py: compute_expected_query_cost``), with Euler's e and 0.204;
    "jennings_qb"  the qubrabench transcription (``qubrabench/algorithms/linsolve.py``): the first
                   constant read as eps, 0.201, kappa >= sqrt(12), eps <= 0.24, no extra alpha;
    "dalzell"      56 kappa + 1.05 kappa ln(1/eps) (Dalzell, arXiv 2406.12086);
    "hhl"          kappa^2 / eps (textbook HHL, arXiv 0811.3171).
The two Jennings transcriptions disagree by 2-30x; both are kept so the disagreement is visible.

Paper mode (``paper_mode=True``) reads Q-Newton (arXiv 2405.00252) as an operation count with unit
cost and no I/O: quantum ``d kappa ln(N kappa / eps)`` against classical ``N^omega`` (omega = 2.373).
The paper gives no constants; this reading reproduces its example that a dense 10^4 x 10^4 matrix
with kappa = 10^4 is not inverted faster by a QLSA, i.e. its rule that kappa > 10^4 stays classical.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from newton.errors import NewtonError
from newton.values import NonNegative, Positive, check_declared

__all__ = [
    "QUERY_MODELS",
    "ClassicalCostModel",
    "QueryModel",
    "QuantumCostModel",
    "QuantumEstimate",
    "crossover_size",
    "measure_flops",
    "paper_mode_costs",
    "query_count",
]

QueryModel = Literal["jennings", "jennings_qb", "dalzell", "hhl"]
QUERY_MODELS: tuple[QueryModel, ...] = get_args(QueryModel)
GATE_TIMES_S = {"today": 1e-6, "fast": 1e-9, "attosecond": 1e-18}  # logical gate time scenarios


@functools.lru_cache(maxsize=1)
def measure_flops(size: int = 384, repeats: int = 5) -> float:
    """Float64 FLOP/s of this machine from the best of ``repeats`` dense matmuls (cached)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / max(best, 1e-9)


def _check(kappa: float, epsilon: float) -> None:
    if not (math.isfinite(kappa) and kappa >= 1):
        raise NewtonError(f"kappa={kappa} must be a finite number >= 1")
    if not 0 < epsilon < 1:
        raise NewtonError(f"epsilon={epsilon} must lie in (0, 1)")


def query_count(model: QueryModel, kappa: float, epsilon: float, alpha: float = 1.0) -> float:
    """Block-encoding queries of a QLSA to precision ``epsilon`` (see the module docstring)."""
    _check(kappa, epsilon)
    if model == "jennings":
        lk = math.log(2 * kappa + 3)
        q = (
            (1741 * alpha * math.e / 500)
            * math.sqrt(kappa**2 + 1)
            * ((133 / 125 + 4 / (25 * kappa ** (1 / 3))) * math.pi * lk + 1)
            + (351 / 50) * lk**2 * (math.log(451 * lk**2 / epsilon) + 1)
            + alpha * kappa * math.log(32 / epsilon)
        )
        return alpha * q / (0.39 - 0.204 * epsilon)
    if model == "jennings_qb":
        k = max(kappa, math.sqrt(12))
        e = min(epsilon, 0.24)
        lk = math.log(2 * k + 3)
        q = (
            (1741 * alpha * e / 500)
            * math.sqrt(k**2 + 1)
            * ((133 / 125 + 4 / (25 * k ** (1 / 3))) * math.pi * lk + 1)
            + (351 / 50) * lk**2 * (math.log(451 * lk**2 / e) + 1)
            + alpha * k * math.log(32 / e)
        )
        return q / (0.39 - 0.201 * e)
    k_eff = alpha * kappa
    if model == "dalzell":
        return 56 * k_eff + 1.05 * k_eff * math.log(1 / epsilon)
    if model == "hhl":
        return k_eff**2 / epsilon
    raise NewtonError(f"query model {model!r} is not one of {list(QUERY_MODELS)}")


@dataclass(frozen=True)
class QuantumEstimate:
    """Modelled resources of one quantum linear solve."""

    queries: float  # block-encoding queries per run
    gates_per_run: float
    shots: float  # runs needed (1 without read-out)
    total_s: float  # modelled wall time


@dataclass(frozen=True)
class QuantumCostModel:
    """Quantum solve time ``Q * c_BE * t_gate (+ load) (* read-out shots)``."""

    query_model: QueryModel = "jennings"  # one of QUERY_MODELS
    gate_time_s: Positive = 1e-6  # logical gate time; 1e-6 today's, 1e-18 the "attosecond" what-if
    gates_per_query: Positive = 100.0  # gates per block-encoding call per system qubit (sparse)
    load_gates_per_entry: NonNegative = 4.0  # state preparation of b: O(N) gates
    include_io: bool = True  # state loading + tomographic read-out (N / eps^2 runs)

    def __post_init__(self) -> None:
        check_declared(self)

    def estimate(
        self, *, n: int, kappa: float, d: int, epsilon: float, alpha: float | None = None
    ) -> QuantumEstimate:
        """Modelled resources for an ``n x n`` system with condition number kappa and row sparsity d."""
        if n < 1 or d < 1:
            raise NewtonError(f"n={n} and d={d} must be >= 1")
        alpha = math.sqrt(d) if alpha is None else alpha
        q = query_count(self.query_model, kappa, epsilon, alpha)
        c_be = self.gates_per_query * max(1, math.ceil(math.log2(max(n, 2))))
        gates = q * c_be
        run_s = gates * self.gate_time_s
        shots = 1.0
        if self.include_io:
            run_s += self.load_gates_per_entry * n * self.gate_time_s
            shots = math.ceil(n / epsilon**2)
        return QuantumEstimate(queries=q, gates_per_run=gates, shots=shots, total_s=run_s * shots)


@dataclass(frozen=True)
class ClassicalCostModel:
    """Classical solve times from flop counts over a FLOP/s rate (measured when ``flops`` is None)."""

    flops: float | None = None  # float64 FLOP/s; None = measure this machine once

    def rate(self) -> float:
        """Float64 FLOP/s: the given ``flops``, else measured once (:func:`measure_flops`)."""
        return self.flops if self.flops is not None else measure_flops()

    def cholesky_s(self, n: int) -> float:
        """Seconds of a Cholesky solve: ``(N^3 / 3 + 2 N^2)`` flops over :meth:`rate`."""
        return (n**3 / 3 + 2 * n**2) / self.rate()

    def cg_s(self, n: int, *, d: int, kappa: float, epsilon: float) -> float:
        """Seconds of CG to precision ``epsilon``: ``ceil(sqrt(kappa) ln(2 / epsilon))`` iterations of ``2 N d`` flops."""
        iters = math.ceil(math.sqrt(kappa) * math.log(2 / epsilon))
        return iters * 2.0 * n * d / self.rate()


def paper_mode_costs(
    *, n: int, kappa: float, d: int, epsilon: float, omega: float = 2.373
) -> tuple[float, float]:
    """Q-Newton's rule as unit-cost operation counts: (quantum ``d kappa ln(N kappa/eps)``, classical ``N^omega``)."""
    _check(kappa, epsilon)
    return d * kappa * math.log(n * kappa / epsilon), float(n) ** omega


def crossover_size(
    *,
    kappa: float,
    epsilon: float,
    quantum: QuantumCostModel,
    classical: ClassicalCostModel,
    d: int | None = None,
    sparsity: float | None = None,
    against: Literal["cholesky", "best"] = "best",
    n_max: float = 1e15,
) -> float:
    """Smallest N (on a log grid, 20 points per decade) where the quantum solve is predicted faster.

    Args:
        kappa, epsilon: conditioning and precision.
        quantum, classical: the cost models.
        d: fixed row sparsity; or ``sparsity``: d = max(1, sparsity * N); default dense (d = N).
        against: ``"cholesky"`` (the paper's LU baseline) or ``"best"`` (min of Cholesky and CG).
        n_max: search limit.

    Returns:
        The crossover N, or ``inf`` when the quantum solver never wins up to ``n_max``.
    """
    grid = np.unique(
        np.round(np.logspace(math.log10(2), math.log10(n_max), int(20 * math.log10(n_max))))
    )
    for n in grid:
        ni = int(n)
        dd = d if d is not None else max(1, int((sparsity if sparsity is not None else 1.0) * ni))
        dd = min(dd, ni)
        tq = quantum.estimate(n=ni, kappa=kappa, d=dd, epsilon=epsilon).total_s
        tc = classical.cholesky_s(ni)
        if against == "best":
            tc = min(tc, classical.cg_s(ni, d=dd, kappa=kappa, epsilon=epsilon))
        if tq < tc:
            return float(ni)
    return math.inf
