"""QNewton: exact damped Newton steps, safeguards, and the shared training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from newton.errors import NewtonError, NonFiniteError
from newton.hhl import resolvable_kappa
from newton.optimizer import QNewton
from newton.scheduler import Scheduler, SchedulerConfig
from qhybrid.train import Closure, TrainConfig, train


def _ce(m, b):
    return nn.functional.cross_entropy(m(b[0]), b[1])


def _data(n: int = 64, d: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + noise > 0).long()  # not separable: a finite optimum
    return x, y


def test_one_step_is_the_exact_damped_newton_step():
    # Prepare: logistic regression (GGN = Hessian), full block, no line search
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    batch = _data()
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()

    def loss_of(th):
        return _ce(lambda x: x @ th[:6].view(2, 3).T + th[6:], batch)

    h = torch.autograd.functional.hessian(loss_of, theta0).numpy()
    g = torch.autograd.functional.jacobian(loss_of, theta0).numpy()
    delta = 1e-2
    expected = theta0.numpy() - np.linalg.solve(h + delta * np.eye(8), g)
    opt = QNewton(
        model.parameters(),
        damping=delta,
        structure="full",
        line_search=False,
        max_step_norm=None,
        scheduler=Scheduler(SchedulerConfig(mode="cholesky")),
    )
    # Execute
    opt.step(Closure(model, [batch], _ce))
    # Assert
    theta1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(theta1, expected, rtol=1e-8, atol=1e-10)
    assert opt.history[-1]["backends"] == {"cholesky": 1}


def test_refuses_non_finite_loss_and_gradient_without_touching_weights():
    model = nn.Linear(3, 2).double()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data()
    x[0, 0] = float("nan")
    opt = QNewton(model.parameters())
    with pytest.raises(NonFiniteError):
        opt.step(Closure(model, [(x, y)], _ce))
    for p, q in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p, q)
    with pytest.raises(NewtonError, match="closure"):
        opt.step(lambda: torch.tensor(1.0))


class _WrongSign(Scheduler):
    """Returns the negated solution: an ascent direction the optimizer must not take."""

    def solve(self, a, b, **kw):
        x, info = super().solve(a, b, **kw)
        return -x, info


def test_fallback_gradient_step_when_direction_is_not_descent():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    batch = _data()
    opt = QNewton(model.parameters(), scheduler=_WrongSign(), fallback_lr=0.5)
    loss0 = float(opt.step(Closure(model, [batch], _ce)))
    assert opt.history[-1]["fallback"] is True
    assert opt.history[-1]["loss_after"] < loss0


def test_trains_through_the_shared_loop_with_kappa_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    data = [_data(32, seed=s) for s in range(4)]
    opt = QNewton(model.parameters(), damping=1e-3, kappa_target=100.0, block_size=16)

    def full_loss() -> float:  # over all four batches (one batch's loss is mostly its noise)
        return sum(float(_ce(model, b)) for b in data) / len(data)

    before = full_loss()
    result = train(model, data, _ce, opt, TrainConfig(max_steps=12, progress=False, device="cpu"))
    assert result.step == 12
    assert full_loss() < 0.85 * before
    # kappa-targeted damping keeps every block at or below the target
    assert all(b["kappa"] <= 100.0 * (1 + 1e-6) for h in opt.history for b in h["block_info"])
    assert len(opt.scheduler.log) == sum(h["blocks"] for h in opt.history)


def test_hhl_in_the_loop_matches_exact_newton_within_1_percent():
    """A 2-class logistic regression with 8 parameters; every solve runs HHL on Aer."""
    finals = {}
    for mode in ("cholesky", "quantum"):
        torch.manual_seed(0)
        model = nn.Linear(3, 2).double()
        batch = _data(48)
        sched = Scheduler(SchedulerConfig(mode=mode, clock_qubits=6))
        # kappa capped by damping at what 6 clock qubits resolve, in both runs alike
        opt = QNewton(
            model.parameters(),
            damping=1e-2,
            structure="full",
            scheduler=sched,
            kappa_target=resolvable_kappa(6),
        )
        for _ in range(6):
            opt.step(Closure(model, [batch], _ce))
        finals[mode] = float(_ce(model, batch).detach())
        if mode == "quantum":
            assert {r["backend"] for r in sched.log} == {"hhl_aer"}
            assert max(r["rel_error"] for r in sched.log) <= 0.05
            assert all(r["kappa_bound"] <= resolvable_kappa(6) * (1 + 1e-9) for r in sched.log)
    assert abs(finals["quantum"] - finals["cholesky"]) <= 0.01 * finals["cholesky"]


def test_kappa_beyond_the_clock_gets_more_clock_qubits_or_the_classical_route():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    batch = _data(48)
    sched = Scheduler(SchedulerConfig(mode="quantum", clock_qubits=4, max_clock_qubits=6))
    opt = QNewton(
        model.parameters(), damping=1e-6, structure="full", scheduler=sched, adapt_damping=False
    )
    for _ in range(3):
        opt.step(Closure(model, [batch], _ce))
    for rec in sched.log:
        if rec["backend"] == "hhl_aer":  # more clock qubits when they suffice
            assert resolvable_kappa(rec["clock_qubits"]) >= rec["kappa_used"]
            assert rec["clock_qubits"] <= 6
        else:
            assert rec["kappa_used"] > resolvable_kappa(6) and "classical route" in rec["route"]
    assert any(r["backend"] == "cholesky" for r in sched.log)


def test_fisher_and_hessian_curvatures_step():
    for kind in ("fisher", "hessian"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        batch = _data()
        opt = QNewton(model.parameters(), curvature=kind, damping=1e-2)
        l0 = float(opt.step(Closure(model, [batch], _ce)))
        assert opt.history[-1]["loss_after"] < l0


def test_sparsified_blocks_report_true_d_and_cosine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    opt = QNewton(model.parameters(), damping=1e-1, sparsify=True, block_size=32)
    l0 = float(opt.step(Closure(model, [_data()], _ce)))
    blocks = opt.history[-1]["block_info"]
    assert all(1 <= b["d"] <= b["n"] and b["cosine"] > 0.5 for b in blocks)
    assert any(b["d"] < b["n"] for b in blocks)  # something was pruned
    assert opt.history[-1]["loss_after"] < l0


@pytest.mark.gpu
def test_cuda_step_matches_cpu():
    steps = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = nn.Linear(3, 2).double().to(device)
        x, y = _data()
        opt = QNewton(model.parameters(), damping=1e-2, structure="full")
        opt.step(Closure(model, [(x.to(device), y.to(device))], _ce))
        steps[device] = torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(steps["cpu"], steps["cuda"])


def test_a_step_that_lowers_the_loss_neither_way_is_rejected():
    # the solve's direction is uphill and the gradient fallback overshoots: trust-region style,
    # the weights are restored and the damping doubles
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    before = [p.detach().clone() for p in model.parameters()]
    opt = QNewton(model.parameters(), scheduler=_WrongSign(), fallback_lr=1e3)
    loss0 = float(opt.step(Closure(model, [_data()], _ce)))
    rec = opt.history[-1]
    assert rec["outcome"] == "rejected" and rec["step_size"] == 0.0
    assert rec["loss_after"] == loss0
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
    assert opt.param_groups[0]["damping"] == pytest.approx(2 * max(0.3, rec["damping_floor"]))


def test_damping_floor_scales_with_the_loss_and_the_curvature_scale_is_below_lambda_max():
    from newton.curvature import Curvature

    batch = _data(64)
    out = {}
    for scale in (1.0, 100.0):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        if scale == 1.0:  # the GGN at the start, formed densely (an independent computation)
            lam_max = float(np.linalg.eigvalsh(Curvature(model, [batch], _ce).dense()).max())

        def loss(m, b, scale=scale):
            return scale * _ce(m, b)

        # damping scaled with the loss: the damped system is the same up to that factor
        opt = QNewton(model.parameters(), damping=0.3 * scale, precondition=False)
        opt.step(Closure(model, [batch], loss))
        out[scale] = (
            opt.history[-1],
            torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        )
    rec, theta = out[1.0]
    rec100, theta100 = out[100.0]
    assert 0 < rec["curvature_scale"] <= lam_max * (1 + 1e-9)
    assert rec["damping_floor"] == pytest.approx(2.5 * rec["curvature_scale"] / 64, rel=1e-12)
    assert rec100["damping_floor"] == pytest.approx(100 * rec["damping_floor"], rel=1e-6)
    torch.testing.assert_close(theta100, theta, rtol=1e-6, atol=1e-9)
