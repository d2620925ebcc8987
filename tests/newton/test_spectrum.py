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
def test_lanczos_within_10_percent_with_40_matvecs_and_claims_no_proof(n, rank):
    g, delta = damped_ggn(n, rank, 500.0, seed=n)
    eig = np.linalg.eigvalsh(g)
    exact = (eig[-1] + delta) / (max(eig[0], 0) + delta)
    calls = []
    op = lambda v: calls.append(1) or g @ v  # noqa: E731  matrix-free, counted
    est = estimate_condition_number(op, n=n, damping=delta, max_matvecs=40)
    assert est.method == "lanczos" and est.matvecs == len(calls) <= 40
    assert abs(est.kappa / exact - 1) <= 0.10
    assert not est.certified and est.upper_bound >= exact  # products alone prove nothing


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


# -- proven bounds ------------------------------------------------------------------------------


def _hidden_top(n: int, seed: int, spread: float) -> np.ndarray:
    """A PSD matrix whose top eigenvector is orthogonal to the Lanczos start of ``seed``.

    The start vector is regenerated exactly as :func:`newton.spectrum.lanczos` draws it; the
    largest eigenvalue (``spread`` times the rest) sits in a direction Lanczos never sees.
    """
    q0 = np.random.default_rng(seed).standard_normal(n)
    q0 /= np.linalg.norm(q0)
    rng = np.random.default_rng(seed + 1000)
    basis = np.linalg.qr(np.column_stack([q0, rng.standard_normal((n, n - 1))]))[0]
    # column 0 spans q0; the top eigenvector is column 1 (orthogonal to q0), and q0 itself lies
    # in an eigenspace, so the Krylov space never leaves it
    lam = np.linspace(0.1, 1.0, n)
    lam[1] = spread
    lam[0] = 0.5
    return (basis * lam) @ basis.T


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_bound_survives_a_spectrum_built_to_defeat_the_lanczos_start(seed):
    n, delta = 300, 1e-2
    a = _hidden_top(n, seed, spread=1e3)
    a = (a + a.T) / 2
    eig = np.linalg.eigvalsh(a)
    exact = (eig[-1] + delta) / (eig[0] + delta)
    # dense, Lanczos path (exact_below=0): the estimate is fooled, the proof is not
    est = estimate_condition_number(a, damping=delta, exact_below=0, seed=seed)
    assert est.kappa < 0.01 * exact  # Lanczos never saw lambda_max
    assert est.certified and est.upper_bound >= exact
    # matrix-free: no proof is possible from the products alone, and none is claimed
    mf = estimate_condition_number(lambda v: a @ v, n=n, damping=delta, seed=seed)
    assert not mf.certified and mf.upper_bound == KAPPA_CAP and "uncertified" in mf.proof
    # ... unless the caller proves lambda_max (here by the Frobenius norm)
    fro = float(np.linalg.norm(a))
    given = estimate_condition_number(
        lambda v: a @ v, n=n, damping=delta, seed=seed, lambda_max_bound=fro
    )
    assert given.certified and given.upper_bound >= exact


SPECTRA = {
    "clustered_at_zero": lambda n: np.concatenate([[1.0], np.full(n - 1, 1e-9)]),
    "rank_deficient": lambda n: np.concatenate(
        [np.geomspace(1, 1e-4, n // 4), np.zeros(n - n // 4)]
    ),
    "wide": lambda n: np.geomspace(1e-12, 1e6, n),
    "two_clusters": lambda n: np.concatenate([np.full(n // 2, 1e3), np.full(n - n // 2, 1e-3)]),
    "single_spike": lambda n: np.concatenate([[1e8], np.ones(n - 1)]),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("n,exact_below", [(1, 512), (40, 512), (200, 0)])
@pytest.mark.parametrize("delta", [0.0, 1e-8, 1e-2])
def test_proven_bound_is_never_below_eigvalsh(name, n, exact_below, delta):
    rng = np.random.default_rng(n)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = SPECTRA[name](n)[:n] if n > 1 else np.array([0.3])
    a = (q * lam) @ q.T
    a = (a + a.T) / 2
    eig = np.linalg.eigvalsh(a + delta * np.eye(n))
    est = estimate_condition_number(a, damping=delta, exact_below=exact_below, psd_tol=1e-8)
    if est.certified:
        assert eig[0] > 0
        assert est.upper_bound >= eig[-1] / eig[0] * (1 - 1e-12)
        assert est.lambda_min_lower <= eig[0] and est.lambda_max_upper + delta >= eig[-1]
    else:
        assert est.upper_bound == KAPPA_CAP
    assert 1.0 <= est.kappa <= KAPPA_CAP and est.upper_bound >= est.kappa


def test_psd_claim_contradicted_by_data_raises():
    from newton.errors import NotPositiveDefiniteError

    a = np.diag([1.0, 0.5, -0.2])
    with pytest.raises(NotPositiveDefiniteError, match="psd=True"):
        estimate_condition_number(a, damping=1.0)
    big = np.diag(np.concatenate([np.linspace(0.1, 1, 99), [-0.5]]))
    with pytest.raises(NotPositiveDefiniteError, match="Ritz"):  # a Ritz value is a proof too
        estimate_condition_number(lambda v: big @ v, n=100, damping=1.0)
    est = estimate_condition_number(a, damping=1.0, psd=False)  # no premise: a dense proof
    assert est.certified and est.upper_bound >= (1.0 + 1.0) / (-0.2 + 1.0)
