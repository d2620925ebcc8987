"""Condition numbers of (damped) curvature blocks: Lanczos estimates and a certified bound.

The quantum solver's cost grows with the condition number kappa of the damped block ``H + delta I``,
so the scheduler needs kappa at every solve, cheaply, and never as NaN or infinity.

Math:
    kappa(H + delta I) = (lambda_max + delta) / (lambda_min + delta)
    For PSD H (GGN, Fisher):  kappa(H + delta I) <= (lambda_max + delta) / delta      (certified)

``lambda_max`` comes from Lanczos with full reorthogonalisation on the operator (about 20-40
matrix-vector products, Ritz values are inner bounds of the spectrum); the certified bound uses the
Ritz value plus its residual norm, ``theta_max + ||A y - theta_max y||``, which bounds an eigenvalue
from above, and for dense input also the Gershgorin row-sum bound. Blocks up to ``exact_below`` are
solved exactly with ``eigvalsh`` (also the test oracle).

Q-Newton's released code estimates kappa from the determinant and the Frobenius norm
(``compute_condition_number_upper_bound``); it returns NaN for [[1, 2], [3, 4]] and overflows from
N = 8 on. Nothing here uses determinants.

References:
    Lanczos 1950; Golub & Van Loan, "Matrix Computations", 4th ed., section 10.1.
    Q-Newton, arXiv 2405.00252.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from newton.errors import NewtonError, NonFiniteError, NotSquareError, NotSymmetricError

logger = logging.getLogger(__name__)

__all__ = [
    "KAPPA_CAP",
    "KappaEstimate",
    "LinearOperator",
    "as_operator",
    "check_symmetric",
    "estimate_condition_number",
    "lanczos",
]

KAPPA_CAP = 1.0 / np.finfo(np.float64).eps  # ~4.5e15: reported for singular blocks instead of inf


@dataclass(frozen=True)
class LinearOperator:
    """A symmetric operator ``v -> A v`` of size ``n``, with its dense matrix when known."""

    n: int
    matvec: Callable[[np.ndarray], np.ndarray]
    dense: np.ndarray | None = None


@dataclass(frozen=True)
class KappaEstimate:
    """A condition-number estimate of ``A + damping I``.

    ``kappa`` is the estimate, ``upper_bound`` a bound that is never below the true value when
    ``certified`` is true (PSD operator, positive damping or exact eigenvalues); both are finite
    (singular blocks report :data:`KAPPA_CAP`). The eigenvalues are those of the undamped ``A``.
    """

    kappa: float
    lambda_max: float  # estimated largest eigenvalue of A (undamped)
    lambda_min: float  # estimated smallest eigenvalue of A (undamped)
    upper_bound: float  # certified upper bound on kappa(A + damping I) when certified
    matvecs: int  # operator products used (0 for exact eigvalsh on a dense matrix)
    method: str  # "eigvalsh" or "lanczos"
    damping: float
    certified: bool
    lambda_max_upper: float  # upper bound on lambda_max used by upper_bound


def check_symmetric(a: np.ndarray, *, name: str = "A", rtol: float = 1e-8) -> None:
    """Raise unless ``a`` is a finite, square, symmetric 2-D array."""
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise NotSquareError(f"{name} has shape {a.shape}; it must be a square (N, N) matrix")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{name} has NaN or infinite entries; check the curvature and data")
    scale = float(np.abs(a).max()) if a.size else 0.0
    asym = float(np.abs(a - a.T).max()) if a.size else 0.0
    if asym > rtol * max(scale, 1e-300):
        raise NotSymmetricError(
            f"{name} is not symmetric: max|A - A^T| = {asym:.3g} > {rtol:g} * max|A| = "
            f"{rtol * scale:.3g}; symmetrise it with (A + A.T) / 2 or use a symmetric mask"
        )


def as_operator(operator: Any, n: int | None = None) -> LinearOperator:
    """Wrap a dense numpy/torch matrix or a callable ``v -> A v`` (with ``n``) as an operator."""
    if isinstance(operator, LinearOperator):
        return operator
    if callable(operator) and not hasattr(operator, "shape"):
        if n is None:
            n = getattr(operator, "n", None) or getattr(operator, "size", None)
        if not isinstance(n, int) or n < 1:
            raise NewtonError(
                "a matrix-free operator needs its size: pass n=... (the length of v in A @ v)"
            )

        def mv(v: np.ndarray) -> np.ndarray:
            out = np.asarray(_to_numpy(operator(v)), dtype=np.float64).reshape(-1)
            if out.shape != (n,):
                raise NotSquareError(f"the operator returned shape {out.shape} for a vector of {n}")
            return out

        return LinearOperator(n, mv)
    a = np.asarray(_to_numpy(operator), dtype=np.float64)
    check_symmetric(a)
    return LinearOperator(a.shape[0], lambda v: a @ v, a)


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().double().numpy()
    return x


def lanczos(op: LinearOperator, steps: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """``steps`` Lanczos iterations with full reorthogonalisation from a random start.

    Returns:
        (ritz_values ascending, residual norms of the Ritz pairs, matvecs used).
    """
    n = op.n
    steps = max(1, min(steps, n))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(n)
    q /= np.linalg.norm(q)
    basis = np.zeros((steps + 1, n))
    basis[0] = q
    alpha: list[float] = []
    beta: list[float] = []
    matvecs = 0
    for j in range(steps):
        w = op.matvec(basis[j])
        matvecs += 1
        if not np.isfinite(w).all():
            raise NonFiniteError("the operator returned NaN or infinity in a Lanczos product")
        a = float(basis[j] @ w)
        alpha.append(a)
        w = w - a * basis[j] - (beta[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Kahan)
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        scale = max(abs(x) for x in alpha) + (max(beta) if beta else 0.0)
        if j == steps - 1 or b <= 1e-12 * max(scale, 1e-300):
            beta.append(b)
            break  # the Krylov space is invariant (exact) or the budget is spent
        beta.append(b)
        basis[j + 1] = w / b
    m = len(alpha)
    t = np.diag(alpha) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    theta, s = np.linalg.eigh(t)
    residuals = np.abs(beta[m - 1] * s[m - 1, :])  # ||A y - theta y|| for each Ritz pair
    return theta, residuals, matvecs


def estimate_condition_number(
    operator: Any,
    *,
    damping: float = 0.0,
    psd: bool = True,
    n: int | None = None,
    max_matvecs: int = 40,
    exact_below: int = 512,
    seed: int = 0,
    require_pd: bool = True,
) -> KappaEstimate:
    """Estimate ``kappa(A + damping I)`` for a symmetric ``A``.

    Args:
        operator: a dense symmetric numpy array or torch tensor, a callable ``v -> A v`` (give
            ``n``), or a :class:`LinearOperator`.
        damping: ``delta >= 0`` added to the diagonal.
        psd: whether ``A`` is known to be positive semi-definite (GGN, Fisher): then
            ``lambda_min(A) >= 0`` and ``(lambda_max + delta) / delta`` bounds kappa.
        n: size of a matrix-free operator.
        max_matvecs: Lanczos steps (products) for operators without an exact path.
        exact_below: dense matrices up to this size use exact ``eigvalsh``.
        seed: the Lanczos start vector's seed (estimates are deterministic given it).
        require_pd: raise when ``A + damping I`` is not positive definite (``psd=False`` only);
            when False such a block reports ``kappa = KAPPA_CAP`` and its eigenvalue range.

    Returns:
        A :class:`KappaEstimate`; ``kappa`` and ``upper_bound`` are finite, capped at
        :data:`KAPPA_CAP` for (numerically) singular blocks.

    Raises:
        NotSquareError, NotSymmetricError, NonFiniteError: bad input.
        NewtonError: a negative damping, or a damped block that is not positive definite when
            ``psd`` is false and the smallest eigenvalue is <= -damping.
    """
    if not np.isfinite(damping) or damping < 0:
        raise NewtonError(f"damping={damping} must be a finite number >= 0")
    op = as_operator(operator, n)
    if op.dense is not None and op.n <= exact_below:
        eig = np.linalg.eigvalsh(op.dense)
        lmax, lmin = float(eig[-1]), float(eig[0])
        lmax_up, matvecs, method = lmax, 0, "eigvalsh"
    else:
        theta, res, matvecs = lanczos(op, max_matvecs, seed=seed)
        lmax, lmin = float(theta[-1]), float(theta[0])
        lmax_up = lmax + float(res[-1]) + 1e-10 * abs(lmax)  # + round-off slack
        if op.dense is not None:  # Gershgorin: lambda_max <= max_i sum_j |a_ij|
            lmax_up = min(lmax_up, float(np.abs(op.dense).sum(axis=1).max()))
        method = "lanczos"
    # round-off can make a PSD block's smallest eigenvalue slightly negative
    lmin_eff = max(lmin, 0.0) if psd else lmin
    top = max(abs(lmax), abs(lmin)) + damping
    floor = top / KAPPA_CAP  # the smallest denominator we report instead of dividing by ~0
    if not psd and lmin_eff + damping <= 0 and not require_pd:
        return KappaEstimate(
            KAPPA_CAP, lmax, lmin, KAPPA_CAP, matvecs, method, float(damping), False, lmax_up
        )
    if not psd and lmin_eff + damping <= 0:
        raise NewtonError(
            f"A + {damping:g} I is not positive definite (smallest eigenvalue estimate "
            f"{lmin_eff + damping:.3g}); raise the damping above {-lmin_eff:.3g} or use a PSD "
            "curvature (curvature='ggn' or 'fisher')"
        )
    kappa = min(KAPPA_CAP, (lmax + damping) / max(lmin_eff + damping, floor))
    certified = psd and (damping > 0 or method == "eigvalsh")
    if method == "eigvalsh":
        upper = kappa if not psd else min(KAPPA_CAP, (lmax_up + damping) / max(damping, floor))
        upper = max(upper, kappa)
    else:
        upper = min(
            KAPPA_CAP, (lmax_up + damping) / max(damping if psd else lmin_eff + damping, floor)
        )
    kappa = max(1.0, kappa)
    upper = max(1.0, upper)
    return KappaEstimate(
        kappa=float(kappa),
        lambda_max=lmax,
        lambda_min=lmin,
        upper_bound=float(upper),
        matvecs=matvecs,
        method=method,
        damping=float(damping),
        certified=bool(certified),
        lambda_max_upper=float(lmax_up),
    )
