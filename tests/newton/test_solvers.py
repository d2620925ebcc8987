"""Classical solvers, the modelled quantum solver, and their input checks."""

from __future__ import annotations

import numpy as np
import pytest

from newton.errors import NewtonError, NotPositiveDefiniteError, NotSquareError, NotSymmetricError
from newton.solvers import cg_solve, cholesky_solve, quantum_model_solve, solve


def _spd(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    return m @ m.T / n + 0.1 * np.eye(n)


def test_cholesky_and_cg_match_numpy():
    a, b = _spd(), np.arange(30.0)
    exact = np.linalg.solve(a, b)
    x, info = cholesky_solve(a, b)
    np.testing.assert_allclose(x, exact, rtol=1e-10)
    assert info.backend == "cholesky" and info.residual < 1e-12
    y, info = cg_solve(lambda v: a @ v, b, n=30, tol=1e-10)  # matrix-free
    np.testing.assert_allclose(y, exact, rtol=1e-7)
    assert info.iterations is not None and 0 < info.iterations <= 300


def test_quantum_model_injects_exactly_epsilon_relative_error():
    a, b = _spd(), np.ones(30)
    exact = np.linalg.solve(a, b)
    x, info = quantum_model_solve(a, b, epsilon=0.1, seed=0)
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) == pytest.approx(0.1)
    assert info.extra["queries"] > 0 and info.extra["modelled_s"] > 0
    x2, _ = quantum_model_solve(a, b, epsilon=0.1, seed=0)
    np.testing.assert_array_equal(x, x2)


def test_solve_dispatch_and_errors():
    a, b = _spd(8), np.ones(8)
    for backend in ("cholesky", "cg", "hhl"):
        x, info = solve(a, b, backend)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=5e-2)
    with pytest.raises(NewtonError):
        solve(a, b, "lu")
    with pytest.raises(NotPositiveDefiniteError):
        cholesky_solve(np.diag([1.0, -1.0]), np.ones(2))
    with pytest.raises(NotPositiveDefiniteError):
        cg_solve(np.diag([1.0, -1.0]), np.ones(2))
    with pytest.raises(NotSymmetricError):
        cg_solve(np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2))
    with pytest.raises(NotSquareError):
        cholesky_solve(np.eye(3), np.ones(2))
