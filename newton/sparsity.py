"""Symmetric sparsification of a damped curvature block, with honest sparsity and a PD check.

A sparse-access block encoding of an N x N matrix costs queries in proportion to its row sparsity d
(the largest number of non-zeros in any row), so pruning small entries can make the quantum solve
cheaper. The pruned matrix must stay Hermitian (a block encoding needs it) and positive definite.

Q-Newton's released code keeps the top-k entries of each row (``prune_matrix_for_quantum_sparsity``),
which is not symmetric. Here the masks are symmetric by construction:

- ``threshold``: keep ``|A_ij| >= tau`` (and the diagonal);
- ``topk``: the union of each row's top-k entries and its transpose (the true d then exceeds k,
  which is why d is measured, never taken from k).

Weyl's inequality decides acceptance. With ``A = G + delta I`` (G PSD) and ``E = A - A_pruned``:
``lambda_min(A_pruned) >= lambda_min(A) - ||E||_2`` and ``lambda_max(A_pruned) <= lambda_max(A) +
||E||_2``, so ``||E||_2 <= weyl_fraction * lambda_min(A)`` keeps the block positive definite with
``kappa' <= (lambda_max + ||E||) / (lambda_min - ||E||)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from newton.errors import NewtonError
from newton.spectrum import check_symmetric

__all__ = ["SparsifyResult", "direction_cosine", "row_sparsity", "sparsify", "sparsify_to_budget"]


@dataclass(frozen=True)
class SparsifyResult:
    """A pruned symmetric matrix and what pruning did to it."""

    matrix: np.ndarray  # (N, N) pruned, symmetric
    mask: np.ndarray  # (N, N) bool, symmetric, diagonal kept
    d: int  # true row sparsity: max non-zeros in any row of the pruned matrix
    d_original: int  # row sparsity before pruning
    nnz: int  # non-zeros of the pruned matrix
    error_norm: float  # ||A - A_pruned||_2
    lambda_min: float  # smallest eigenvalue of the unpruned A
    lambda_max: float  # largest eigenvalue of the unpruned A
    weyl_ok: bool  # ||E|| <= weyl_fraction * lambda_min(A): PD kept, with the kappa bound below
    kappa_bound: (
        float  # Weyl bound (lambda_max + ||E||) / (lambda_min - ||E||); inf when not PD-safe
    )
    method: str


def row_sparsity(a: np.ndarray, *, atol: float = 0.0) -> int:
    """The largest number of entries with ``|a_ij| > atol`` in a row."""
    return int((np.abs(a) > atol).sum(axis=1).max()) if a.size else 0


def _mask(a: np.ndarray, method: str, tau: float | None, k: int | None) -> np.ndarray:
    n = a.shape[0]
    mag = np.abs(a)
    if method == "threshold":
        if tau is None or not tau >= 0:
            raise NewtonError(f"threshold sparsification needs tau >= 0, got {tau}")
        mask = mag >= tau
    elif method == "topk":
        if k is None or not 1 <= k <= n:
            raise NewtonError(f"top-k sparsification needs 1 <= k <= N={n}, got k={k}")
        idx = np.argpartition(-mag, k - 1, axis=1)[:, :k]
        mask = np.zeros_like(mag, dtype=bool)
        np.put_along_axis(mask, idx, True, axis=1)
        mask = mask | mask.T  # the union keeps the mask symmetric
    else:
        raise NewtonError(f"sparsify method={method!r} must be 'threshold' or 'topk'")
    np.fill_diagonal(mask, True)
    return mask


def sparsify(
    a: np.ndarray,
    *,
    method: Literal["threshold", "topk"] = "threshold",
    tau: float | None = None,
    k: int | None = None,
    weyl_fraction: float = 0.5,
) -> SparsifyResult:
    """Prune a symmetric positive definite block with a symmetric mask.

    Args:
        a: ``(N, N)`` symmetric matrix, usually the damped block ``G + delta I``.
        method: ``"threshold"`` (keep ``|a_ij| >= tau``) or ``"topk"`` (union of row-wise top-k).
        tau: threshold for ``"threshold"``; None: the largest threshold that passes the Weyl
            check (:func:`sparsify_to_budget`).
        k: entries per row for ``"topk"`` (the reported d is the true one, usually larger).
        weyl_fraction: accept when ``||E||_2 <= weyl_fraction * lambda_min(a)``.
    """
    if method == "threshold" and tau is None:
        return sparsify_to_budget(a, weyl_fraction=weyl_fraction)
    a = np.asarray(a, dtype=np.float64)
    check_symmetric(a)
    mask = _mask(a, method, tau, k)
    pruned = np.where(mask, a, 0.0)
    err = float(np.linalg.norm(a - pruned, 2)) if a.size else 0.0
    eig = np.linalg.eigvalsh(a)
    lmin, lmax = float(eig[0]), float(eig[-1])
    ok = lmin > 0 and err <= weyl_fraction * lmin
    bound = (lmax + err) / (lmin - err) if lmin > err else float("inf")
    return SparsifyResult(
        matrix=pruned,
        mask=mask,
        d=row_sparsity(pruned),
        d_original=row_sparsity(a),
        nnz=int((pruned != 0).sum()),
        error_norm=err,
        lambda_min=lmin,
        lambda_max=lmax,
        weyl_ok=bool(ok),
        kappa_bound=float(bound),
        method=method,
    )


def sparsify_to_budget(
    a: np.ndarray, *, weyl_fraction: float = 0.5, steps: int = 24
) -> SparsifyResult:
    """The sparsest threshold mask that still passes the Weyl check (bisection on tau).

    ``||E||_2`` grows with tau, so bisection over the sorted magnitudes finds the largest accepted
    tau; the result is always accepted (tau = 0 keeps everything, E = 0).
    """
    a = np.asarray(a, dtype=np.float64)
    check_symmetric(a)
    mags = np.unique(np.abs(a[~np.eye(a.shape[0], dtype=bool)]))
    best = sparsify(a, method="threshold", tau=0.0, weyl_fraction=weyl_fraction)
    lo, hi = 0, len(mags) - 1
    for _ in range(steps):
        if lo > hi:
            break
        mid = (lo + hi) // 2
        res = sparsify(a, method="threshold", tau=float(mags[mid]), weyl_fraction=weyl_fraction)
        if res.weyl_ok:
            best, lo = res, mid + 1
        else:
            hi = mid - 1
    return best


def direction_cosine(a: np.ndarray, a_pruned: np.ndarray, g: np.ndarray) -> float:
    """Cosine between the Newton directions ``a^{-1} g`` and ``a_pruned^{-1} g``."""
    x = np.linalg.solve(a, g)
    y = np.linalg.solve(a_pruned, g)
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / den) if den > 0 else 1.0
