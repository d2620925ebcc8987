"""Linear solvers for damped Newton systems, behind one interface: ``(x, SolveInfo)``.

Backends:

- ``cholesky``: dense SPD solve (LAPACK ``potrf``/``potrs`` via scipy); N^3/3 flops.
- ``cg``: matrix-free conjugate gradient on ``v -> A v``; ``~sqrt(kappa) log(2/eps)`` products.
- ``hhl``: HHL on Aer (:func:`newton.hhl.hhl_solve`), N <= 16.
- ``quantum_model``: a modelled quantum linear solver for blocks too large to simulate: the
  classical solution plus an error of relative size epsilon (the QLSA's target precision) in a
  random direction, and the modelled resources of the solve. It is for measuring how training
  reacts to QLSA-level errors, not a simulation.

Every solver checks its input (square, finite, symmetric, positive definite) and raises a
:class:`~newton.errors.NewtonError` subclass naming the problem and the fix.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import scipy.linalg

from newton.errors import NewtonError, NonFiniteError, NotPositiveDefiniteError
from newton.hhl import hhl_solve
from newton.spectrum import as_operator
from newton.systems import SolveInfo, as_array, check_rhs, check_spd

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "cg_solve",
    "cholesky_solve",
    "quantum_model_solve",
    "solve",
]

Backend = Literal["cholesky", "cg", "hhl", "quantum_model"]
BACKENDS: tuple[str, ...] = ("cholesky", "cg", "hhl", "quantum_model")


def cholesky_solve(a: Any, b: Any) -> tuple[np.ndarray, SolveInfo]:
    """Dense SPD solve by Cholesky factorisation."""
    t0 = time.perf_counter()
    a, b = as_array(a), as_array(b)
    factor = check_spd(a)
    b = check_rhs(b, a.shape[0])
    x = scipy.linalg.cho_solve((factor, True), b)
    wall = time.perf_counter() - t0
    bn = float(np.linalg.norm(b)) or 1.0
    return x, SolveInfo(
        "cholesky", a.shape[0], wall_s=wall, residual=float(np.linalg.norm(a @ x - b) / bn)
    )


def cg_solve(
    operator: Any,
    b: Any,
    *,
    n: int | None = None,
    tol: float = 1e-8,
    maxiter: int | None = None,
    x0: Any = None,
    precondition: Callable[[Any], Any] | None = None,
    truncate: bool = False,
    progress_tol: float = 0.0,
) -> tuple[Any, SolveInfo]:
    """Preconditioned conjugate gradient on an SPD operator, to ``||r|| <= tol ||b||``.

    The one CG of the package: dense blocks, matrix-free blocks and Hessian-free steps use it.
    ``b`` may be a numpy array (the operator then maps numpy to numpy) or a torch tensor (torch
    to torch, no copies to the host); ``x`` comes back in the same type.

    Math (Hestenes-Stiefel with preconditioner ``M``, ``precondition(r) = M^{-1} r``):
        z = M^{-1} r,  alpha = r.z / p.A p,  x += alpha p,  r -= alpha A p,  p = z + (r.z)'/(r.z) p
    The quadratic ``phi(x) = x.A x / 2 - b.x = -x.(b + r) / 2`` is tracked for free, and so is
    the largest Rayleigh quotient ``p.A p / p.p`` of the search directions (a lower bound of
    ``lambda_max(A)``, returned as ``extra["rayleigh_max"]``); with
    ``progress_tol > 0`` CG also stops when ``phi`` improved by less than ``progress_tol * k`` in
    relative terms over the last ``k = max(10, i / 10)`` iterations (Martens 2010, section 4.4).

    Args:
        operator: dense SPD matrix, or a callable ``v -> A v`` (give ``n`` for numpy input).
        b: right-hand side.
        tol: relative residual to stop at.
        maxiter: iteration limit (default ``10 N``).
        x0: warm start (e.g. the previous Newton direction).
        precondition: ``r -> M^{-1} r`` for an SPD ``M`` (e.g. a diagonal), or None.
        truncate: stop at ``maxiter`` (or at a direction with ``p.A p <= 0``, which for a damped
            PSD operator is round-off) and return the iterate (truncated Newton) instead of raising.
        progress_tol: Martens' relative-progress criterion; 0 = off.

    Raises:
        NotPositiveDefiniteError: a search direction with ``p.A p <= 0`` (A is not SPD).
        NewtonError: no convergence within ``maxiter`` when ``truncate`` is False.
    """
    t0 = time.perf_counter()
    b, size, matvec = _cg_problem(operator, b, n)
    maxiter = maxiter or 10 * size
    if not (math.isfinite(tol) and tol >= 0):
        raise NewtonError(f"tol={tol} must be a finite number >= 0 (a relative residual)")
    if maxiter < 1:
        raise NewtonError(f"maxiter={maxiter} must be >= 1")
    bn = float((b @ b) ** 0.5)
    if bn == 0:
        return b * 0.0, SolveInfo("cg", size, residual=0.0, iterations=0)
    if not math.isfinite(bn):
        raise NonFiniteError("b (the gradient) has NaN or infinite entries; check the loss and lr")
    x = b * 0.0 if x0 is None else x0 * 1.0
    r = b - matvec(x) if x0 is not None else b * 1.0
    x, r, extra = _iterate(matvec, b, x, r, precondition, tol, maxiter, truncate, progress_tol)
    res = float((r @ r) ** 0.5) / bn
    iterations = extra.pop("iterations")
    return x, SolveInfo(
        "cg",
        size,
        wall_s=time.perf_counter() - t0,
        residual=res,
        iterations=iterations,
        extra=extra,
    )


def _iterate(
    matvec: Callable[[Any], Any],
    b: Any,
    x: Any,
    r: Any,
    precondition: Callable[[Any], Any] | None,
    tol: float,
    maxiter: int,
    truncate: bool,
    progress_tol: float,
) -> tuple[Any, Any, dict[str, Any]]:
    """CG's iterations from ``x`` with residual ``r`` (the math in :func:`cg_solve`); returns the
    iterate, its residual and ``{"iterations", "phi", "stopped", "rayleigh_max"}``."""
    bn = float((b @ b) ** 0.5)
    z = precondition(r) if precondition is not None else r
    p = z * 1.0
    rz = float(r @ z)
    phis: list[float] = [float(-(x @ (b + r))) / 2]
    rayleigh_max = 0.0
    it = 0
    stopped = "tolerance"
    while float((r @ r) ** 0.5) > tol * bn:
        if it >= maxiter:
            if truncate:
                stopped = "maxiter"
                break
            raise NewtonError(
                f"CG did not reach tol={tol:g} in {maxiter} iterations (residual "
                f"{float((r @ r) ** 0.5) / bn:.3g}); raise the damping or maxiter"
            )
        ap = matvec(p)
        pap = float(p @ ap)
        if not _positive_curvature(pap, truncate):
            stopped = "non-positive curvature"
            break
        rayleigh_max = max(rayleigh_max, pap / float(p @ p))
        alpha = rz / pap
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r) if precondition is not None else r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
        phis.append(float(-(x @ (b + r))) / 2)
        if progress_tol > 0 and _stalled(phis, progress_tol):
            stopped = "no progress"
            break
    return (
        x,
        r,
        {"iterations": it, "phi": phis[-1], "stopped": stopped, "rayleigh_max": rayleigh_max},
    )


def _cg_problem(operator: Any, b: Any, n: int | None) -> tuple[Any, int, Callable[[Any], Any]]:
    """``(b, N, matvec)`` for CG: torch tensors as they are (no copies to the host), numpy input
    checked (:func:`newton.systems.check_rhs`)."""
    if hasattr(b, "detach"):
        return b, int(b.numel()), operator if callable(operator) else (lambda v: operator @ v)
    op = as_operator(operator if callable(operator) else as_array(operator), n)
    return check_rhs(as_array(b), op.n), op.n, op.matvec


def _positive_curvature(pap: float, truncate: bool) -> bool:
    """Whether CG may step along a direction with ``p.A p = pap``: False (stop, keep the iterate)
    for ``pap <= 0`` when truncating (round-off on a near-zero direction of a damped PSD
    operator); an error otherwise, and for a non-finite product."""
    if not math.isfinite(pap):
        raise NonFiniteError("the operator returned NaN or infinity during CG")
    if pap <= 0 and not truncate:
        raise NotPositiveDefiniteError(
            f"CG found p.A p = {pap:.3g} <= 0: the operator is not positive definite; add "
            "damping or use a PSD curvature ('ggn', 'fisher')"
        )
    return pap > 0


def _stalled(phis: list[float], progress_tol: float) -> bool:
    """Martens' test: ``(phi_i - phi_{i-k}) / phi_i < k * tol`` with ``k = max(10, i / 10)``."""
    it = len(phis) - 1
    k = max(10, it // 10)
    return it > k and phis[-1] < 0 and (phis[-1] - phis[-1 - k]) / phis[-1] < progress_tol * k


def quantum_model_solve(
    a: Any,
    b: Any,
    *,
    epsilon: float = 1e-2,
    seed: int | None = None,
    kappa: float | None = None,
    d: int | None = None,
    cost_model: Any = None,
) -> tuple[np.ndarray, SolveInfo]:
    """A modelled QLSA: ``x + epsilon ||x|| u`` (u a random unit vector) and its modelled cost.

    Args:
        a, b: the SPD system.
        epsilon: relative error of the returned x (the QLSA's target precision).
        seed: seed of the error direction.
        kappa, d: condition number and row sparsity for the resource estimate (computed if None).
        cost_model: a :class:`newton.cost.QuantumCostModel` (default settings if None).
    """
    from newton.cost import QuantumCostModel

    if not 0 <= epsilon < 1:
        raise NewtonError(f"epsilon={epsilon} must lie in [0, 1)")
    t0 = time.perf_counter()
    x, _ = cholesky_solve(a, b)
    a_arr = as_array(a)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(x.shape)
    u /= np.linalg.norm(u)
    x_noisy = x + epsilon * float(np.linalg.norm(x)) * u
    if kappa is None:
        kappa = float(np.linalg.cond(a_arr))
    if d is None:
        d = int((a_arr != 0).sum(axis=1).max())
    model = cost_model or QuantumCostModel()
    est = model.estimate(n=a_arr.shape[0], kappa=kappa, d=d, epsilon=max(epsilon, 1e-12))
    bn = float(np.linalg.norm(b)) or 1.0
    return x_noisy, SolveInfo(
        "quantum_model",
        a_arr.shape[0],
        wall_s=time.perf_counter() - t0,
        residual=float(np.linalg.norm(a_arr @ x_noisy - as_array(b)) / bn),
        kappa=kappa,
        d=d,
        epsilon=epsilon,
        extra={"modelled_s": est.total_s, "queries": est.queries},
    )


def solve(
    a: Any, b: Any, backend: str = "cholesky", **options: Any
) -> tuple[np.ndarray, SolveInfo]:
    """Solve the SPD system ``a x = b`` with the named backend (see module docstring)."""
    solvers: dict[str, Callable[..., tuple[np.ndarray, SolveInfo]]] = {
        "cholesky": cholesky_solve,
        "cg": cg_solve,
        "quantum_model": quantum_model_solve,
    }
    if backend == "hhl":
        return hhl_solve(as_array(a), as_array(b), **options)
    if backend not in solvers:
        raise NewtonError(f"solver backend={backend!r} is not one of {list(BACKENDS)}")
    return solvers[backend](a, b, **options)
