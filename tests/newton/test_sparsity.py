"""Symmetric sparsification: masks, true row sparsity, Weyl acceptance, direction cosine."""

from __future__ import annotations

import numpy as np
import pytest

from newton.errors import NewtonError, NotSymmetricError
from newton.sparsity import direction_cosine, row_sparsity, sparsify, sparsify_to_budget


def _block(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    j = rng.standard_normal((3 * n, n)) * rng.exponential(1.0, n)  # uneven column scales
    g = j.T @ j / (3 * n)
    return g + 0.2 * np.abs(g).max() * np.eye(n)


def test_topk_union_is_symmetric_and_reports_true_d():
    a = _block()
    res = sparsify(a, method="topk", k=4)
    assert np.array_equal(res.mask, res.mask.T) and np.allclose(res.matrix, res.matrix.T)
    assert res.d == row_sparsity(res.matrix) >= 4  # the union makes d larger than k
    assert res.d_original == 40


def test_threshold_mask_weyl_bound_holds():
    a = _block()
    res = sparsify(a, method="threshold", tau=np.quantile(np.abs(a), 0.5))
    eig = np.linalg.eigvalsh(res.matrix)
    err = np.linalg.norm(a - res.matrix, 2)
    assert res.error_norm == pytest.approx(err)
    assert eig[0] >= res.lambda_min - err - 1e-12 and eig[-1] <= res.lambda_max + err + 1e-12
    if res.weyl_ok:
        assert eig[0] > 0 and eig[-1] / eig[0] <= res.kappa_bound + 1e-9


def test_budget_search_is_accepted_pd_sparser_and_keeps_direction():
    a = _block(60, seed=2)
    g = np.random.default_rng(5).standard_normal(60)
    res = sparsify_to_budget(a)
    assert res.weyl_ok and np.linalg.eigvalsh(res.matrix)[0] > 0
    assert res.d < 60
    assert direction_cosine(a, res.matrix, g) >= 0.9
    assert direction_cosine(a, a, g) == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(NotSymmetricError):
        sparsify(np.array([[1.0, 2.0], [0.0, 1.0]]), tau=0.1)
    with pytest.raises(NewtonError):
        sparsify(np.eye(3), method="topk", k=0)
    with pytest.raises(NewtonError):
        sparsify(np.eye(3), method="random")  # type: ignore[arg-type]
