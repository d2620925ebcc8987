"""Condition numbers of (damped) curvature blocks: an estimate and, beside it, a proven bound.

The quantum solver's cost grows with the condition number kappa of the damped block ``A + delta I``,
so the scheduler needs kappa at every solve, cheaply, and never as NaN or infinity; and it needs to
know which number it may rely on.

Math:
    kappa(A + delta I) = (lambda_max + delta) / (lambda_min + delta)

The **estimate** (``kappa``): exact ``eigvalsh`` for dense blocks up to ``exact_below``, else
Lanczos with full reorthogonalisation (<= ``max_matvecs`` products). Ritz values lie inside the
spectrum, so the top Ritz value underestimates lambda_max and the bottom one overestimates
lambda_min; for PSD operators the bottom end uses ``max(0, theta_min - r_min)`` (the lower end of
the residual interval of the bottom Ritz pair), which is exact when that pair has converged and
falls back to 0, the rank-deficient case of a GGN, when it has not.

The **bound** (``upper_bound``, ``certified=True`` only when it is a proof):
    lambda_max <= min(Gershgorin max_i sum_j |a_ij|,  eigvalsh max + 2 n eps ||A||_F)     (dense)
    lambda_max <= lambda_max_bound                                                       (given)
    lambda_min(A + delta I) >= eigvalsh min - 2 n eps ||A||_F + delta                    (dense)
    lambda_min(A + delta I) >= delta - psd_tol lambda_max_upper    (psd=True premise, no eigvalsh)
(``2 n eps ||A||_F`` bounds the backward error of a symmetric eigensolver, Golub & Van Loan
8.1/8.4; the Gershgorin sum is inflated by ``(1 + 2 n eps)`` for its own rounding.) Krylov methods
alone cannot bound lambda_max: a matrix-free operator without ``lambda_max_bound`` gets
``certified=False`` (an adversary can hide the top eigenvector from any fixed start vector; the
tests build such spectra). ``psd=True`` contradicted by the data (an eigenvalue, or a Ritz value,
which is a convex combination of eigenvalues, below ``-psd_tol ||A||``) raises
:class:`~newton.errors.NotPositiveDefiniteError`.

Q-Newton's released code estimates kappa from the determinant and the Frobenius norm
(``compute_condition_number_upper_bound``); it returns NaN for [[1, 2], [3, 4]] and overflows from
N = 8 on. Nothing here uses determinants.

References:
    Lanczos 1950; Golub & Van Loan, "Matrix Computations", 4th ed., sections 8.1, 10.1.
    Kuczynski & Wozniakowski, SIAM J. Matrix Anal. Appl. 13 (1992) (why Lanczos gives no proof).
    Q-Newton, arXiv 2405.00252.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from newton.errors import (
    NewtonError,
    NonFiniteError,
    NotPositiveDefiniteError,
    NotRealError,
    NotSquareError,
    NotSymmetricError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KAPPA_CAP",
    "KappaEstimate",
    "LinearOperator",
    "as_operator",
    "check_symmetric",
    "estimate_condition_number",
    "lanczos",
    "to_real_array",
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
    """A condition-number estimate of ``A + damping I`` and, beside it, what can be proven.

    ``kappa`` is the estimate. ``upper_bound`` is never below the true value when ``certified``
    is true, and ``proof`` names what it rests on; otherwise it is :data:`KAPPA_CAP` or an
    unproven number. Both are finite (singular blocks report :data:`KAPPA_CAP`). The eigenvalues
    are those of the undamped ``A``; ``lambda_min_lower`` bounds ``lambda_min(A + damping I)``.
    """

    kappa: float
    lambda_max: float  # estimated largest eigenvalue of A (undamped)
    lambda_min: float  # estimated smallest eigenvalue of A (undamped)
    upper_bound: float  # proven upper bound on kappa(A + damping I) when certified
    matvecs: int  # operator products used (0 for exact eigvalsh on a dense matrix)
    method: str  # "eigvalsh" or "lanczos"
    damping: float
    certified: bool
    lambda_max_upper: float  # proven upper bound on lambda_max(A); inf when none
    lambda_min_lower: float = -math.inf  # proven lower bound on lambda_min(A + damping I)
    proof: str = ""  # what the certificate rests on, or why there is none


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
            out = to_real_array(operator(v), name="the operator's output").reshape(-1)
            if out.shape != (n,):
                raise NotSquareError(f"the operator returned shape {out.shape} for a vector of {n}")
            return out

        return LinearOperator(n, mv)
    a = to_real_array(operator)
    check_symmetric(a)
    return LinearOperator(a.shape[0], lambda v: a @ v, a)


def to_real_array(x: Any, *, name: str = "A") -> np.ndarray:
    """``x`` (numpy, torch or nested lists) as a float64 array; complex input is refused, not cast."""
    if hasattr(x, "detach"):  # torch tensor
        if x.is_complex():
            raise NotRealError(
                f"{name} is complex ({x.dtype}); newton solves real symmetric systems"
            )
        return np.asarray(x.detach().cpu().double().numpy())
    if np.iscomplexobj(x):
        raise NotRealError(
            f"{name} is complex; newton solves real symmetric systems (write a Hermitian one in "
            "real form [[Re, -Im], [Im, Re]])"
        )
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise NewtonError(f"{name} must be a real numeric array, got {type(x).__name__}") from err


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


def _check_options(damping: float, max_matvecs: int, exact_below: int, psd_tol: float) -> None:
    if not isinstance(damping, int | float) or not math.isfinite(damping) or damping < 0:
        raise NewtonError(f"damping={damping!r} must be a finite number >= 0")
    if not isinstance(max_matvecs, int) or max_matvecs < 1:
        raise NewtonError(f"max_matvecs={max_matvecs!r} must be an integer >= 1")
    if not isinstance(exact_below, int) or exact_below < 0:
        raise NewtonError(f"exact_below={exact_below!r} must be an integer >= 0")
    if not math.isfinite(psd_tol) or psd_tol < 0:
        raise NewtonError(f"psd_tol={psd_tol!r} must be a finite number >= 0")


def _dense_bounds(a: np.ndarray, eig: np.ndarray | None) -> tuple[float, float | None, str]:
    """Proven ``(lambda_max upper, lambda_min lower or None, proof)`` of a dense symmetric ``a``."""
    n = a.shape[0]
    eps = float(np.finfo(np.float64).eps)
    rows = np.abs(a).sum(axis=1)  # Gershgorin: lambda_max <= max_i (a_ii + sum_j!=i |a_ij|)
    gersh = float((np.diag(a) + rows - np.abs(np.diag(a))).max()) * (1 + 2 * n * eps)
    gersh += 2 * n * eps * float(rows.max())  # rounding of the sum itself
    if eig is None:
        return gersh, None, "Gershgorin"
    slack = 2 * n * eps * float(np.linalg.norm(a))  # backward error of eigvalsh
    return min(gersh, float(eig[-1]) + slack), float(eig[0]) - slack, "eigvalsh + backward error"


@dataclass
class _Spectrum:
    """The extreme eigenvalues of an operator, how they were found, and what is proven of them."""

    lmax: float
    lmin: float
    lmin_est: float  # lambda_min as the estimate uses it (Kato-Temple for Lanczos)
    matvecs: int
    method: str  # "eigvalsh" or "lanczos"
    lmax_up: float  # a proven upper bound of lambda_max (inf: none)
    lmin_low: float | None  # a proven lower bound of lambda_min (None: none)
    proof: str
    scale: float  # ||A|| or its largest Ritz value, for the PSD check's tolerance


def _spectrum(
    op: LinearOperator, *, exact_below: int, max_matvecs: int, seed: int, psd: bool
) -> _Spectrum:
    """Exact ``eigvalsh`` for dense operators up to ``exact_below``, else Lanczos; with the proven
    bounds of a dense matrix (:func:`_dense_bounds`)."""
    if op.dense is not None and op.n <= exact_below:
        eig = np.linalg.eigvalsh(op.dense)
        lmax_up, lmin_low, proof = _dense_bounds(op.dense, eig)
        lmin = float(eig[0])
        return _Spectrum(float(eig[-1]), lmin, lmin, 0, "eigvalsh", lmax_up, lmin_low, proof,
                         float(np.linalg.norm(op.dense)))  # fmt: skip
    theta, res, matvecs = lanczos(op, max_matvecs, seed=seed)
    lmax, lmin = float(theta[-1]), float(theta[0])
    gap = float(theta[1] - theta[0]) if len(theta) > 1 else math.inf
    # Kato-Temple form theta - r^2 / gap: exact once the bottom pair converged, 0 before
    lmin_est = max(0.0, lmin - float(res[0]) ** 2 / max(gap, 1e-300)) if psd else lmin
    lmax_up, lmin_low, proof = math.inf, None, "none: Krylov values cannot bound lambda_max"
    if op.dense is not None:
        lmax_up, lmin_low, proof = _dense_bounds(op.dense, None)
    return _Spectrum(lmax, lmin, lmin_est, matvecs, "lanczos", lmax_up, lmin_low, proof,
                     float(np.abs(theta).max()))  # fmt: skip


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
    lambda_max_bound: float | None = None,
    psd_tol: float = 1e-6,
) -> KappaEstimate:
    """Estimate ``kappa(A + damping I)`` for a symmetric ``A``, with a proven bound when possible.

    Args:
        operator: a dense symmetric numpy array or torch tensor, a callable ``v -> A v`` (give
            ``n``), or a :class:`LinearOperator`.
        damping: ``delta >= 0`` added to the diagonal.
        psd: whether ``A`` is positive semi-definite by construction (GGN, Fisher). It is the
            premise of the ``lambda_min(A + delta I) >= delta`` bound and it is checked against
            the data: an eigenvalue or Ritz value below ``-psd_tol ||A||`` raises.
        n: size of a matrix-free operator.
        max_matvecs: Lanczos steps (products) for operators without an exact path.
        exact_below: dense matrices up to this size use exact ``eigvalsh``.
        seed: the Lanczos start vector's seed (estimates are deterministic given it).
        require_pd: raise when ``A + damping I`` is not positive definite (``psd=False`` only);
            when False such a block reports ``kappa = KAPPA_CAP`` and its eigenvalue range.
        lambda_max_bound: a proven upper bound on ``lambda_max(A)`` known to the caller (e.g.
            from the structure of the operator); it certifies matrix-free operators.
        psd_tol: relative tolerance of the PSD check (round-off of the caller's products).

    Returns:
        A :class:`KappaEstimate`; ``kappa`` and ``upper_bound`` are finite, capped at
        :data:`KAPPA_CAP` for (numerically) singular blocks.

    Raises:
        NotSquareError, NotSymmetricError, NonFiniteError: bad input.
        NotPositiveDefiniteError: ``psd=True`` but the data show a negative eigenvalue.
        NewtonError: a bad option, or a damped block that is not positive definite when ``psd``
            is false and the smallest eigenvalue is <= -damping.
    """
    _check_options(damping, max_matvecs, exact_below, psd_tol)
    if lambda_max_bound is not None and not math.isfinite(lambda_max_bound):
        raise NewtonError(f"lambda_max_bound={lambda_max_bound!r} must be finite or None")
    op = as_operator(operator, n)
    sp = _spectrum(op, exact_below=exact_below, max_matvecs=max_matvecs, seed=seed, psd=psd)
    lmax, lmin, lmin_est, method = sp.lmax, sp.lmin, sp.lmin_est, sp.method
    if lambda_max_bound is not None and lambda_max_bound < sp.lmax_up:
        sp.lmax_up, sp.proof = float(lambda_max_bound), "caller's lambda_max_bound"
    if psd and lmin < -psd_tol * max(sp.scale, 1e-300):
        raise NotPositiveDefiniteError(
            f"psd=True but the {'smallest eigenvalue' if method == 'eigvalsh' else 'lowest Ritz value'} "
            f"is {lmin:.3g} < -{psd_tol:g} * ||A|| (a proof that A has a negative eigenvalue); "
            "pass psd=False or check the curvature"
        )
    # proven lower bound on lambda_min(A + delta I): the data's (eigvalsh), else the PSD premise
    # up to round-off, lambda_min(A) >= -psd_tol * lambda_max_upper (checked above on the data)
    low = -math.inf if sp.lmin_low is None else sp.lmin_low + damping
    if sp.lmin_low is None and psd and math.isfinite(sp.lmax_up):
        low = damping - psd_tol * max(sp.lmax_up, 0.0)
        sp.proof += f" + psd premise (lambda_min >= -{psd_tol:g} lambda_max_upper)"
    lmin_eff = max(lmin_est, 0.0) if psd else lmin_est
    top = max(abs(lmax), abs(lmin)) + damping
    floor = top / KAPPA_CAP  # the smallest denominator we report instead of dividing by ~0
    if not psd and lmin_eff + damping <= 0 and not require_pd:
        return KappaEstimate(KAPPA_CAP, lmax, lmin, KAPPA_CAP, sp.matvecs, method, float(damping),
                             False, sp.lmax_up, low, "not positive definite")  # fmt: skip
    if not psd and lmin_eff + damping <= 0:
        raise NewtonError(
            f"A + {damping:g} I is not positive definite (smallest eigenvalue estimate "
            f"{lmin_eff + damping:.3g}); raise the damping above {-lmin_eff:.3g} or use a PSD "
            "curvature (curvature='ggn' or 'fisher')"
        )
    kappa = max(1.0, min(KAPPA_CAP, (lmax + damping) / max(lmin_eff + damping, floor)))
    return _certified(sp, kappa, float(damping), low)


def _certified(sp: _Spectrum, kappa: float, damping: float, low: float) -> KappaEstimate:
    """The estimate with its proof: ``(lambda_max_upper + delta) / lambda_min_lower`` when both
    bounds are proven and the quotient is at most :data:`KAPPA_CAP`, else uncertified."""
    lmax_up = sp.lmax_up
    raw = (lmax_up + damping) / low if math.isfinite(lmax_up) and low > 0 else math.inf
    certified = raw <= KAPPA_CAP  # a bound capped below its value would not be one
    upper = max(raw, kappa) if certified else KAPPA_CAP
    return KappaEstimate(
        kappa=float(kappa),
        lambda_max=sp.lmax,
        lambda_min=sp.lmin,
        upper_bound=float(upper),
        matvecs=sp.matvecs,
        method=sp.method,
        damping=damping,
        certified=bool(certified),
        lambda_max_upper=float(lmax_up),
        lambda_min_lower=float(low),
        proof=sp.proof if certified else f"uncertified ({sp.proof})",
    )
