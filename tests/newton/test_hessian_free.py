"""Hessian-free Newton: cached-linearisation GGN products, closed-form output Hessians, the shared
preconditioned CG, and the Hessian-free QNewton step, each against an independent dense computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from newton.curvature import Curvature, output_hessian_kind
from newton.optimizer import QNewton
from newton.scheduler import Scheduler
from newton.solvers import cg_solve
from qhybrid.train import Closure


def _dense_ggn(model, x, loss_of_out):
    """J^T (d^2 L / dz^2) J from the full Jacobian and the full output Hessian, by autograd."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def out_fn(th):
        params, off = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = int(np.prod(s))
            params[n] = th[off : off + k].view(s)
            off += k
        return torch.func.functional_call(model, params, (x,))

    z = out_fn(theta).detach()
    jac = torch.autograd.functional.jacobian(out_fn, theta).reshape(z.numel(), -1)
    h_out = torch.autograd.functional.hessian(loss_of_out, z).reshape(z.numel(), z.numel())
    return jac.T @ h_out @ jac


LOSSES = {
    "cross_entropy": (lambda z, y: nn.functional.cross_entropy(z, y), "cross_entropy"),
    "mse": (lambda z, y: nn.functional.mse_loss(z, nn.functional.one_hot(y, 3).double()), "mse"),
    # no closed form applies (sum reduction, label smoothing): the autodiff product must be used
    "ce_sum_smooth": (
        lambda z, y: nn.functional.cross_entropy(z, y, reduction="sum", label_smoothing=0.1),
        "autodiff",
    ),
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_ggn_vector_products_match_the_dense_ggn(loss_name):
    # Prepare: an MLP in float64 and a loss, the GGN built densely from J and the output Hessian
    loss, kind = LOSSES[loss_name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    curv = Curvature(model, [(x, y)], lambda m, b: loss(m(b[0]), b[1]))
    expected = _dense_ggn(model, x, lambda z: loss(z, y))
    # Execute: several products through the one cached linearisation
    vs = torch.randn(5, curv.size, dtype=torch.float64)
    got = torch.stack([curv.matvec(v) for v in vs])
    # Assert
    torch.testing.assert_close(got, vs @ expected.T, rtol=1e-9, atol=1e-11)
    assert curv.output_hessian_kinds() == [kind]
    torch.testing.assert_close(curv.dense(), expected, rtol=1e-9, atol=1e-11)


def test_output_hessian_kind_is_checked_not_assumed():
    z = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    assert output_hessian_kind(lambda o: nn.functional.cross_entropy(o, y), z) == "cross_entropy"
    assert output_hessian_kind(lambda o: nn.functional.mse_loss(o, z * 0), z) == "mse"
    # MSE with sum reduction has Hessian 2 I, not 2 I / numel: no closed form may claim it
    assert output_hessian_kind(lambda o: ((o - 1) ** 2).sum(), z) == "autodiff"


def _spd(n: int, kappa: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.geomspace(1.0, kappa, n)) @ q.T


@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("warm", [False, True])
def test_cg_matches_numpy_solve(precondition, warm):
    # Prepare: an SPD system with a badly scaled diagonal (where Jacobi preconditioning helps)
    n = 40
    scale = np.geomspace(1e-2, 1e2, n)
    a = _spd(n, 50.0, 1) * np.sqrt(np.outer(scale, scale))
    b = np.random.default_rng(2).standard_normal(n)
    exact = np.linalg.solve(a, b)
    pre = (lambda r: r / np.diag(a)) if precondition else None
    x0 = exact + 0.01 * np.random.default_rng(3).standard_normal(n) if warm else None
    # Execute: numpy and torch inputs through the same CG
    x, info = cg_solve(a, b, tol=1e-12, maxiter=2000, precondition=pre, x0=x0)
    xt, _ = cg_solve(
        lambda v: torch.as_tensor(a) @ v,
        torch.as_tensor(b),
        tol=1e-12,
        maxiter=2000,
        precondition=(lambda r: r / torch.as_tensor(np.diag(a).copy())) if precondition else None,
        x0=torch.as_tensor(x0) if warm else None,
    )
    # Assert
    np.testing.assert_allclose(x, exact, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(xt.numpy(), exact, rtol=1e-8, atol=1e-10)
    assert np.linalg.norm(a @ x - b) <= 1e-11 * np.linalg.norm(b) * 10
    phi = 0.5 * x @ a @ x - b @ x
    assert info.extra["phi"] == pytest.approx(phi, rel=1e-9)


def test_preconditioning_and_warm_start_cut_iterations_and_truncation_returns():
    n = 60
    scale = np.geomspace(1e-3, 1e3, n)
    a = _spd(n, 10.0, 4) * np.sqrt(np.outer(scale, scale))
    b = np.ones(n)
    exact = np.linalg.solve(a, b)
    _, plain = cg_solve(a, b, tol=1e-8, maxiter=5000)
    _, pre = cg_solve(a, b, tol=1e-8, maxiter=5000, precondition=lambda r: r / np.diag(a))
    _, warm = cg_solve(a, b, tol=1e-8, maxiter=5000, x0=exact * (1 + 1e-6))
    assert pre.iterations < plain.iterations and warm.iterations < plain.iterations
    x, trunc = cg_solve(a, b, tol=1e-12, maxiter=3, truncate=True)
    assert trunc.iterations == 3 and trunc.residual > 1e-12
    # each CG iterate lowers the quadratic model: 3 steps are better than none
    assert 0.5 * x @ a @ x - b @ x < 0


def test_cg_rayleigh_quotients_bound_lambda_max_from_below():
    # the by-product behind QNewton's curvature scale: every p.A p / p.p lies in the spectrum's
    # range, and CG run to convergence on a 5-eigenvalue matrix sees the top of it
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((30, 30)))
    eig = np.repeat([0.1, 1.0, 3.0, 10.0, 40.0], 6)
    a = (q * eig) @ q.T
    _, info = cg_solve(a, np.ones(30), tol=1e-12, maxiter=100)
    assert 0.1 <= info.extra["rayleigh_max"] <= 40.0 * (1 + 1e-9)
    assert info.extra["rayleigh_max"] >= 0.5 * 40.0


def test_hessian_free_step_is_the_damped_gauss_newton_step():
    # Prepare: an MLP (GGN != Hessian); the step's exact solution from the dense GGN
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    batch = (x, (x[:, 0] > 0).long())

    def ce(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    curv = Curvature(model, [batch], ce)
    g = curv.gradient().numpy()
    delta = 0.05
    ggn = curv.dense().numpy()
    expected = curv.theta.numpy() - np.linalg.solve(ggn + delta * np.eye(curv.size), g)
    opt = QNewton(
        model.parameters(),
        damping=delta,
        method="hessian_free",
        line_search=False,
        max_step_norm=None,
        adapt_damping=False,
        cg_max_iter=200,
        cg_tol=1e-12,
        precondition=False,
    )
    # Execute
    opt.step(Closure(model, [batch], ce))
    # Assert
    theta1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(theta1, expected, rtol=1e-7, atol=1e-9)
    info = opt.history[-1]
    assert info["method"] == "hessian_free" and info["cg_iterations"] <= curv.size + 1
    # the predicted decrease used by Levenberg-Marquardt: p.(G + delta I)p from CG's phi
    p = expected - curv.theta.numpy()
    quad = p @ (ggn + delta * np.eye(curv.size)) @ p
    assert info["quad"] == pytest.approx(quad, rel=1e-6)


def test_auto_method_switches_on_parameter_count():
    small = nn.Linear(3, 2).double()
    big = nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 3)).double()

    def ce(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    # the default: Hessian-free at every size; a threshold keeps small models on blocks
    for model, above, method in ((small, 0, "hessian_free"), (small, 1000, "blocks"),
                                 (big, 1000, "hessian_free")):  # fmt: skip
        x = torch.randn(16, model[0].in_features if isinstance(model, nn.Sequential) else 3)
        batch = (x.double(), torch.randint(0, 2, (16,)))
        opt = QNewton(model.parameters(), damping=0.1, hessian_free_above=above)
        opt.step(Closure(model, [batch], ce))
        assert opt.history[-1]["method"] == method
    # block-only features keep a big model on blocks, where they act
    for kw in ({"kappa_target": 100.0}, {"sparsify": True}, {"scheduler": Scheduler()}):
        opt = QNewton(big.parameters(), damping=0.1, **kw)
        opt.step(Closure(big, [(torch.randn(16, 30).double(), torch.randint(0, 2, (16,)))], ce))
        assert opt.history[-1]["method"] == "blocks"
