"""Condition-number estimates against exact eigenvalues."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from newton.errors import NewtonError, NonFiniteError, NotSquareError, NotSymmetricError
from newton.spectrum import KAPPA_CAP, estimate_condition_number


def damped_ggn(n: int, rank: int, kappa_target: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """A GGN-like PSD J^T D J (rank < n, decaying spectrum) and a damping giving kappa ~ target."""
    rng = np.random.default_rng(seed)
    j = rng.standard_normal((rank, n)) * np.logspace(0, -3, rank)[:, None]
    g = j.T @ (np.abs(rng.standard_normal(rank))[:, None] * j) / rank
    lmax = np.linalg.eigvalsh(g)[-1]
    return g, lmax / (kappa_target - 1)


def test_exact_for_small_dense_blocks():
    g, delta = damped_ggn(50, 60, 100.0)
    eig = np.linalg.eigvalsh(g + delta * np.eye(50))
    est = estimate_condition_number(g, damping=delta)
    assert est.method == "eigvalsh" and est.matvecs == 0
    assert math.isclose(est.kappa, eig[-1] / eig[0], rel_tol=1e-10)
    assert est.upper_bound >= est.kappa and est.certified


@pytest.mark.parametrize("n,rank", [(600, 200), pytest.param(1500, 300, marks=pytest.mark.slow)])
def test_lanczos_within_10_percent_with_40_matvecs_and_bound_is_certified(n, rank):
    g, delta = damped_ggn(n, rank, 500.0, seed=n)
    eig = np.linalg.eigvalsh(g)
    exact = (eig[-1] + delta) / (max(eig[0], 0) + delta)
    calls = []
    op = lambda v: calls.append(1) or g @ v  # noqa: E731  matrix-free, counted
    est = estimate_condition_number(op, n=n, damping=delta, max_matvecs=40)
    assert est.method == "lanczos" and est.matvecs == len(calls) <= 40
    assert abs(est.kappa / exact - 1) <= 0.10
    assert est.upper_bound >= exact


def test_full_rank_spd_lanczos_and_bound():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    eig = np.logspace(-2, 2, 400)
    a = (q * eig) @ q.T
    a = (a + a.T) / 2
    est = estimate_condition_number(a, damping=0.5, exact_below=100)
    exact = (eig[-1] + 0.5) / (eig[0] + 0.5)
    assert abs(est.kappa / exact - 1) <= 0.10
    assert est.upper_bound >= exact


def test_torch_input_and_singular_block_stay_finite():
    a = torch.zeros(8, 8, dtype=torch.float64)
    a[0, 0] = 1.0
    est = estimate_condition_number(a)
    assert math.isfinite(est.kappa) and est.kappa == pytest.approx(KAPPA_CAP)
    assert math.isfinite(est.upper_bound)


@pytest.mark.parametrize("n", [2, 8, 64, 256])
def test_never_nan_on_spd_where_the_determinant_bound_fails(n):
    # Q-Newton's det-based bound returns NaN/inf for SPD N >= 8; ours stays exact and finite.
    rng = np.random.default_rng(n)
    m = rng.standard_normal((n, n))
    a = m @ m.T + n * np.eye(n)
    est = estimate_condition_number(a)
    assert math.isfinite(est.kappa) and est.kappa == pytest.approx(np.linalg.cond(a), rel=1e-8)


def test_bad_input():
    with pytest.raises(NotSymmetricError):
        estimate_condition_number(np.array([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(NotSquareError):
        estimate_condition_number(np.ones((2, 3)))
    with pytest.raises(NonFiniteError):
        estimate_condition_number(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(NewtonError):
        estimate_condition_number(np.eye(3), damping=-1.0)
    with pytest.raises(NewtonError, match="not positive definite"):
        estimate_condition_number(np.diag([-2.0, 1.0]), psd=False, damping=1.0)
    with pytest.raises(NewtonError, match="size"):
        estimate_condition_number(lambda v: v)
