"""Scheduler: cheapest backend, forced modes, paper mode, logged decisions."""

from __future__ import annotations

import numpy as np
import pytest

from newton.cost import ClassicalCostModel
from newton.errors import NewtonError
from newton.scheduler import Scheduler, SchedulerConfig

FIXED = ClassicalCostModel(flops=1e10)  # pin the machine speed so decisions are reproducible


def _spd(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    return m @ m.T / n + np.eye(n)


def test_auto_picks_cheapest_and_logs_everything():
    sched = Scheduler(SchedulerConfig(), classical=FIXED)
    a, b = _spd(8), np.ones(8)
    x, info = sched.solve(a, b, kappa=float(np.linalg.cond(a)), tag="w")
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-6)
    rec = sched.log[-1]
    for key in (
        "n",
        "kappa",
        "d",
        "epsilon",
        "pred_cholesky",
        "pred_cg",
        "pred_quantum",
        "choice",
        "backend",
        "wall_s",
        "residual",
    ):
        assert key in rec
    assert rec["choice"] == min(("cholesky", "cg", "quantum"), key=lambda k: rec[f"pred_{k}"])
    assert rec["choice"] != "quantum"  # today's gate times with read-out: classical wins
    assert info.predicted_s["quantum"] > info.predicted_s["cholesky"]


def test_attosecond_gates_without_io_choose_quantum_for_large_blocks():
    cfg = SchedulerConfig(gate_time_s=1e-18, include_io=False)
    sched = Scheduler(cfg, classical=FIXED)
    pred = sched.predict(n=4096, kappa=10, d=16)
    assert sched.choose(pred) == "quantum"


def test_quantum_mode_runs_hhl_small_and_model_large():
    sched = Scheduler(SchedulerConfig(mode="quantum", epsilon=0.05), classical=FIXED)
    a = _spd(4)
    x, info = sched.solve(a, np.ones(4), kappa=float(np.linalg.cond(a)))
    assert info.backend == "hhl_aer"
    a = _spd(40)
    exact = np.linalg.solve(a, np.ones(40))
    x, info = sched.solve(a, np.ones(40), kappa=float(np.linalg.cond(a)))
    assert info.backend == "quantum_model"
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) == pytest.approx(0.05)


def test_paper_mode_rule_and_determinism():
    sched = Scheduler(SchedulerConfig(paper_mode=True), classical=FIXED)
    assert sched.choose(sched.predict(n=10**4, kappa=1e3, d=10**4)) == "quantum"
    assert sched.choose(sched.predict(n=10**4, kappa=1e5, d=10**4)) == "cholesky"
    a, b = _spd(30), np.ones(30)
    runs = []
    for _ in range(2):
        s = Scheduler(SchedulerConfig(mode="quantum", seed=3), classical=FIXED)
        runs.append(s.solve(a, b, kappa=10.0)[0])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_matrix_free_uses_cg_and_bad_config():
    sched = Scheduler(SchedulerConfig(mode="cholesky"), classical=FIXED)
    a = _spd(20)
    x, info = sched.solve(None, np.ones(20), kappa=5.0, matvec=lambda v: a @ v)
    assert info.backend == "cg"
    with pytest.raises(NewtonError):
        SchedulerConfig(mode="lu")  # type: ignore[arg-type]
    with pytest.raises(NewtonError):
        SchedulerConfig(hhl_max_n=32)


def test_decides_on_the_proven_bound_and_logs_its_basis():
    # Attosecond gates without I/O make quantum the cheapest choice for a large block
    cfg = SchedulerConfig(gate_time_s=1e-18, include_io=False, simulate_hhl=False)
    a, b = _spd(64), np.ones(64)
    sched = Scheduler(cfg, classical=FIXED)
    sched.solve(a, b, kappa=2.0, kappa_bound=50.0)
    rec = sched.log[-1]
    assert rec["kappa_used"] == 50.0 and rec["kappa_basis"] == "proven kappa bound"
    assert rec["pred_quantum"] == sched.predict(n=64, kappa=50.0, d=64)["quantum"]
    # no proof: quantum is excluded in auto mode, and the log says why
    sched.solve(a, b, kappa=2.0)
    rec = sched.log[-1]
    assert rec["choice"] != "quantum" and rec["kappa_basis"] == "no proven kappa: quantum excluded"
    # the estimate policy takes the risk and says so
    risky = Scheduler(
        SchedulerConfig(
            gate_time_s=1e-18, include_io=False, simulate_hhl=False, kappa_policy="estimate"
        ),
        classical=FIXED,
    )
    risky.solve(a, b, kappa=2.0, kappa_bound=50.0)
    assert risky.log[-1]["kappa_used"] == 2.0 and "may be below" in risky.log[-1]["kappa_basis"]
    with pytest.raises(NewtonError, match="kappa_bound"):
        sched.solve(a, b, kappa=2.0, kappa_bound=float("nan"))
