"""HHL on Aer against numpy.linalg.solve (the issue's fidelity targets)."""

from __future__ import annotations

import numpy as np
import pytest

from newton.errors import (
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSquareError,
    NotSymmetricError,
    TooLargeForHHLError,
)
from newton.hhl import hhl_solve


def spd(n: int, kappa: float, seed: int) -> np.ndarray:
    """Random orthogonal eigenvectors; eigenvalues 1 and kappa plus uniform ones in between."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = np.r_[1.0, kappa, rng.uniform(1.0, kappa, n - 2)][:n]
    a = (q * ev) @ q.T
    return (a + a.T) / 2


def fidelity(x: np.ndarray, y: np.ndarray) -> float:
    return float((x @ y) ** 2 / (x @ x) / (y @ y))


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("kappa", [2.0, 10.0])
def test_statevector_hhl_meets_targets(n, kappa):
    a = spd(n, kappa, seed=n)
    b = np.random.default_rng(n + 1).standard_normal(n)
    x, info = hhl_solve(a, b, clock_qubits=6)
    exact = np.linalg.solve(a, b)
    assert fidelity(x, exact) >= 0.9999
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) <= 3e-2  # norm and sign recovered
    assert info.backend == "hhl_aer" and info.extra["qubits"] == int(np.log2(n)) + 7
    # success probability C^2 ||A^-1 b||^2 / ||b||^2 with C = 0.9 lambda_min
    expected_p = (0.9 * np.linalg.norm(exact) / np.linalg.norm(b)) ** 2
    assert info.p_success == pytest.approx(expected_p, rel=0.05)


def test_success_probability_at_least_0_2_for_well_spread_right_hand_sides():
    # p >= 0.2 needs b not concentrated on the top eigenvectors (worst case is (0.9 / kappa)^2).
    a = spd(4, 4.0, seed=7)
    w, v = np.linalg.eigh(a)
    b = v @ (1.0 / w)  # weight ~ 1/lambda on each eigenvector
    _, info = hhl_solve(a, b)
    assert info.p_success >= 0.2


def test_kappa_50_with_8_clock_qubits():
    a = spd(4, 50.0, seed=3)
    b = np.random.default_rng(0).standard_normal(4)
    x, _ = hhl_solve(a, b, clock_qubits=8)
    assert fidelity(x, np.linalg.solve(a, b)) >= 0.9999


def test_non_power_of_two_is_padded():
    a = spd(5, 5.0, seed=5)
    b = np.random.default_rng(5).standard_normal(5)
    x, info = hhl_solve(a, b)
    assert x.shape == (5,) and info.extra["padded_n"] == 8
    assert fidelity(x, np.linalg.solve(a, b)) >= 0.9999


def test_shots_readout_recovers_signs_and_norm():
    a = spd(4, 4.0, seed=4)
    b = np.random.default_rng(4).standard_normal(4)
    x1, info = hhl_solve(a, b, shots=20000, seed=11)
    x2, _ = hhl_solve(a, b, shots=20000, seed=11)
    exact = np.linalg.solve(a, b)
    np.testing.assert_array_equal(x1, x2)  # seeded
    assert fidelity(x1, exact) >= 0.999
    assert np.linalg.norm(x1 - exact) / np.linalg.norm(exact) <= 0.05
    assert info.extra["circuits"] == 3


def test_bad_input():
    with pytest.raises(TooLargeForHHLError):
        hhl_solve(np.eye(17), np.ones(17))
    with pytest.raises(NotSquareError):
        hhl_solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(NotSymmetricError):
        hhl_solve(np.array([[2.0, 1.0], [0.0, 2.0]]), np.ones(2))
    with pytest.raises(NotPositiveDefiniteError):
        hhl_solve(np.diag([1.0, -1.0]), np.ones(2))
    with pytest.raises(NonFiniteError):
        hhl_solve(np.eye(2), np.array([1.0, np.nan]))
    with pytest.raises(NotSquareError):
        hhl_solve(np.eye(2), np.ones(3))
