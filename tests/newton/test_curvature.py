"""Curvature products and blocks against independent autograd computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from newton.curvature import Curvature, make_blocks
from newton.errors import NewtonError


def _ce(m, b):
    return nn.functional.cross_entropy(m(b[0]), b[1])


@pytest.fixture
def mlp_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    batch = (torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 3, (7,)))
    return model, batch


def test_hessian_matches_autograd(mlp_batch):
    model, batch = mlp_batch
    curv = Curvature(model, [batch], _ce, kind="hessian")
    expected = torch.autograd.functional.hessian(curv.loss, curv.theta)
    torch.testing.assert_close(curv.dense(), expected)
    v = torch.randn(curv.size, dtype=torch.float64)
    torch.testing.assert_close(curv.matvec(v), expected @ v)


def test_ggn_matches_jacobian_formula(mlp_batch):
    # Prepare: J (outputs x params) and the softmax cross-entropy Hessian per example, by hand
    model, (x, y) = mlp_batch
    curv = Curvature(model, [(x, y)], _ce, kind="ggn")
    out_fn = lambda th: torch.func.functional_call(model, curv.unflatten(th), (x,))  # noqa: E731
    jac = torch.autograd.functional.jacobian(out_fn, curv.theta).reshape(-1, curv.size)
    p = torch.softmax(out_fn(curv.theta), -1).detach()
    h_out = torch.block_diag(*[(torch.diag(pi) - torch.outer(pi, pi)) / len(x) for pi in p])
    expected = jac.T @ h_out @ jac
    # Execute / Assert
    torch.testing.assert_close(curv.dense(), expected)
    v = torch.randn(curv.size, dtype=torch.float64)
    torch.testing.assert_close(curv.matvec(v), expected @ v)
    assert torch.linalg.eigvalsh(curv.dense()).min() > -1e-12  # PSD


def test_ggn_equals_hessian_for_linear_least_squares():
    torch.manual_seed(1)
    model = nn.Linear(4, 2).double()
    batch = (torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64))
    mse = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    ggn = Curvature(model, [batch], mse, kind="ggn").dense()
    hess = Curvature(model, [batch], mse, kind="hessian").dense()
    torch.testing.assert_close(ggn, hess)


def test_fisher_is_mean_outer_product_of_per_example_gradients(mlp_batch):
    model, (x, y) = mlp_batch
    curv = Curvature(model, [(x, y)], _ce, kind="fisher")
    rows = []
    for i in range(len(x)):
        gi = torch.autograd.grad(_ce(model, (x[i : i + 1], y[i : i + 1])), list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in gi]))
    g = torch.stack(rows)
    torch.testing.assert_close(curv.dense(), g.T @ g / len(x))


def test_blocks_are_diagonal_blocks_of_the_full_matrix(mlp_batch):
    model, batch = mlp_batch
    for kind in ("ggn", "fisher", "hessian"):
        curv = Curvature(model, [batch, batch], _ce, kind=kind)
        full = curv.dense()
        blocks = make_blocks(curv.names, curv.numels, structure="layer", block_size=8)
        assert sum(b.size for b in blocks) == curv.size and max(b.size for b in blocks) <= 8
        for blk, mat in zip(blocks, curv.dense_blocks(blocks), strict=True):
            torch.testing.assert_close(mat, full[blk.slice, blk.slice])
            v = torch.randn(blk.size, dtype=torch.float64)
            torch.testing.assert_close(curv.block_matvec(blk, v), full[blk.slice, blk.slice] @ v)


def test_make_blocks_structures():
    names, numels = ["w", "b"], [10, 3]
    assert [b.size for b in make_blocks(names, numels, structure="layer", block_size=4)] == [
        4,
        4,
        2,
        3,
    ]
    assert [b.size for b in make_blocks(names, numels, structure="block", block_size=4)] == [
        4,
        4,
        4,
        1,
    ]
    assert [b.size for b in make_blocks(names, numels, structure="full", block_size=4)] == [13]
    with pytest.raises(NewtonError):
        make_blocks(names, numels, structure="rows", block_size=4)  # type: ignore[arg-type]


def test_ggn_rejects_loss_that_calls_model_twice(mlp_batch):
    model, batch = mlp_batch
    twice = lambda m, b: _ce(m, b) + _ce(m, b)  # noqa: E731
    with pytest.raises(NewtonError, match="exactly once"):
        Curvature(model, [batch], twice, kind="ggn").dense()
    Curvature(model, [batch], twice, kind="hessian").dense()  # the Hessian does not care
