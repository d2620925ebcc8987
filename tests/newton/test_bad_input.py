"""Every newton setting that makes no sense is a QHybridError naming the value; the CLI exits 2.

Table-driven: each row is (what is called, the bad keyword arguments, the text the message must
contain). Nothing is built or changed before the check fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from newton.commands import SolveConfig
from newton.curvature import Curvature, make_blocks
from newton.damping import LevenbergMarquardt, kappa_target_damping
from newton.errors import NewtonError, NonFiniteError
from newton.experiments import CompareConfig, CrossoverConfig, HHLLoopConfig, NoiseConfig
from newton.optimizer import QNewton
from newton.scheduler import SchedulerConfig
from newton.solvers import cg_solve, quantum_model_solve
from newton.spectrum import estimate_condition_number
from newton.stage import StageConfig
from qhybrid.errors import QHybridError
from qhybrid.train import Closure


def _ce(m, b):
    return nn.functional.cross_entropy(m(b[0]), b[1])


INF, NAN = math.inf, math.nan


def _qnewton(**kw):
    return QNewton(nn.Linear(2, 2).parameters(), **kw)


def _kappa(**kw):
    return estimate_condition_number(np.eye(3), **kw)


def _cg(**kw):
    return cg_solve(np.eye(3), np.ones(3), **kw)


CASES = [
    # QNewton
    (_qnewton, {"lr": 0.0}, "'lr' = 0.0"),
    (_qnewton, {"lr": NAN}, "'lr' is NaN"),
    (_qnewton, {"damping": -1e-3}, "'damping' = -0.001"),
    (_qnewton, {"damping": INF}, "'damping' = inf is not a finite float"),
    (_qnewton, {"kappa_target": 0.5}, "'kappa_target' = 0.5"),
    (_qnewton, {"kappa_target": INF}, "'kappa_target' = inf is not a finite float"),
    (_qnewton, {"structure": "diagonal"}, "'structure' = 'diagonal' is not one of"),
    (_qnewton, {"curvature": "gauss"}, "'curvature' = 'gauss' is not one of"),
    (_qnewton, {"method": "lbfgs"}, "'method' = 'lbfgs' is not one of"),
    (_qnewton, {"block_size": 0}, "'block_size' = 0"),
    (_qnewton, {"block_size": 2.5}, "'block_size' must be an int, got 2.5"),
    (_qnewton, {"max_backtracks": -1}, "'max_backtracks' = -1"),
    (_qnewton, {"armijo": 1.0}, "'armijo' = 1.0"),
    (_qnewton, {"max_step_norm": 0.0}, "'max_step_norm' = 0.0"),
    (_qnewton, {"fallback_lr": -0.1}, "'fallback_lr' = -0.1"),
    (_qnewton, {"dense_max": 0}, "'dense_max' = 0"),
    (_qnewton, {"kappa_matvecs": 0}, "'kappa_matvecs' = 0"),
    (_qnewton, {"curvature_batch": 0}, "'curvature_batch' = 0"),
    (_qnewton, {"exact_kappa_below": -1}, "'exact_kappa_below' = -1"),
    (_qnewton, {"min_damping": -1.0}, "'min_damping' = -1.0"),
    (_qnewton, {"damping_floor": -1.0}, "'damping_floor' = -1.0"),
    (_qnewton, {"damping_floor": NAN}, "'damping_floor' is NaN"),
    (_qnewton, {"damping": NAN}, "'damping' is NaN"),
    (_qnewton, {"cg_tol": INF}, "'cg_tol' = inf is not a finite float"),
    (_qnewton, {"lr": INF}, "'lr' = inf is not a finite float"),
    (_qnewton, {"curvature_batch": -8}, "'curvature_batch' = -8"),
    (lambda **kw: QNewton([]), {}, "no parameters"),
    (lambda **kw: QNewton(nn.ReLU().parameters()), {}, "no parameters"),
    (lambda **kw: QNewton(nn.Linear(2, 2).requires_grad_(False).parameters()), {}, "frozen"),
    (_qnewton, {"hessian_free_above": -5}, "'hessian_free_above' = -5"),
    (_qnewton, {"cg_max_iter": 0}, "'cg_max_iter' = 0"),
    (_qnewton, {"cg_tol": -1e-3}, "'cg_tol' = -0.001"),
    (_qnewton, {"line_search": "yes"}, "'line_search' must be a bool, got 'yes'"),
    (_qnewton, {"method": "hessian_free", "curvature": "hessian"}, "PSD"),
    (_qnewton, {"method": "hessian_free", "kappa_target": 10.0}, "method='blocks'"),
    # condition numbers, damping, CG, modelled quantum solver
    (_kappa, {"damping": -1.0}, "damping=-1.0"),
    (_kappa, {"damping": INF}, "damping=inf"),
    (_kappa, {"max_matvecs": 0}, "max_matvecs=0"),
    (_kappa, {"exact_below": -1}, "exact_below=-1"),
    (_kappa, {"psd_tol": -1.0}, "psd_tol=-1.0"),
    (_kappa, {"lambda_max_bound": NAN}, "lambda_max_bound=nan"),
    (lambda **kw: estimate_condition_number(lambda v: v, n=0), {}, "size"),
    (lambda **kw: kappa_target_damping(1.0, 0.1, 0.9), {}, "kappa_target=0.9"),
    (lambda **kw: LevenbergMarquardt(delta=INF), {}, "'delta' = inf is not a finite float"),
    (lambda **kw: LevenbergMarquardt(increase=1.0), {}, "'increase' = 1.0"),
    (_cg, {"tol": -1e-8}, "tol=-1e-08"),
    (lambda **kw: estimate_condition_number(np.eye(2) * (1 + 1j)), {}, "complex"),
    (lambda **kw: estimate_condition_number(torch.eye(2, dtype=torch.complex64)), {}, "complex"),
    (lambda **kw: cg_solve(np.eye(2), np.ones(2) * 1j), {}, "complex"),
    (lambda **kw: estimate_condition_number(lambda v: v * 1j, n=2), {}, "complex"),
    (_cg, {"maxiter": -3}, "maxiter=-3"),
    (lambda **kw: quantum_model_solve(np.eye(2), np.ones(2), epsilon=1.5), {}, "epsilon=1.5"),
    (lambda **kw: make_blocks(["w"], [4], structure="rows", block_size=2), {}, "structure='rows'"),
    (lambda **kw: make_blocks(["w"], [4], structure="layer", block_size=0), {}, "block_size=0"),
    # scheduler
    (SchedulerConfig, {"mode": "fast"}, "'mode' = 'fast' is not one of"),
    (SchedulerConfig, {"epsilon": 0.0}, "'epsilon' = 0.0"),
    (SchedulerConfig, {"query_model": "magic"}, "'query_model' = 'magic' is not one of"),
    (SchedulerConfig, {"gate_time_s": 0.0}, "'gate_time_s' = 0.0"),
    (SchedulerConfig, {"clock_qubits": 0}, "'clock_qubits' = 0"),
    (SchedulerConfig, {"clock_qubits": 8, "max_clock_qubits": 6}, "max_clock_qubits=6"),
    (SchedulerConfig, {"hhl_max_n": 32}, "'hhl_max_n' = 32"),
    (SchedulerConfig, {"hhl_shots": 0}, "'hhl_shots' = 0"),
    (SchedulerConfig, {"cg_tol": NAN}, "'cg_tol' is NaN"),
    (SchedulerConfig, {"kappa_policy": "hope"}, "'kappa_policy' = 'hope' is not one of"),
    # experiment and CLI configs
    (SolveConfig, {"n": 0}, "'n' = 0"),
    (SolveConfig, {"n": -4}, "'n' = -4"),
    (SolveConfig, {"kappa": 0.5}, "'kappa' = 0.5"),
    (SolveConfig, {"backend": "gpu"}, "'backend' = 'gpu' is not one of"),
    (SolveConfig, {"clock_qubits": 13}, "'clock_qubits' = 13"),
    (CompareConfig, {"hidden": 0}, "'hidden' = 0"),
    (CompareConfig, {"epochs": -1}, "'epochs' = -1"),
    (CompareConfig, {"batch_size": 0}, "'batch_size' = 0"),
    (CompareConfig, {"dataset": "cifar"}, "'dataset' = 'cifar' is not one of"),
    (CompareConfig, {"dataset": "mnist"}, "mnist_dir"),
    (CompareConfig, {"optimizers": ("qnewton", "rmsprop")}, "'rmsprop'"),
    (CompareConfig, {"damping": INF}, "'damping' = inf is not a finite float"),
    (CompareConfig, {"damping_floor": -2.5}, "'damping_floor' = -2.5"),
    (CompareConfig, {"cg_max_iter": 0}, "'cg_max_iter' = 0"),
    (CompareConfig, {"curvature_batch": 0}, "'curvature_batch' = 0"),
    (CompareConfig, {"dataset": "friedman2"}, "'dataset' = 'friedman2' is not one of"),
    (CompareConfig, {"kappa_target": 0.5}, "'kappa_target' = 0.5"),
    (CompareConfig, {"test_fraction": 1.0}, "'test_fraction' = 1.0"),
    (HHLLoopConfig, {"features": 9}, "'features' = 9"),
    (HHLLoopConfig, {"features": 5, "classes": (1, 2, 3)}, "> 16"),
    (HHLLoopConfig, {"classes": (3,)}, "'classes' = (3,)"),
    (HHLLoopConfig, {"steps": 0}, "'steps' = 0"),
    (HHLLoopConfig, {"clock_qubits": 0}, "'clock_qubits' = 0"),
    (CrossoverConfig, {"kappas": (0.5,)}, "'kappas[0]' = 0.5"),
    (CrossoverConfig, {"d": 0}, "'d' = 0"),
    (CrossoverConfig, {"query_models": ("oracle",)}, "'oracle'"),
    (NoiseConfig, {"epsilons": (1.0,)}, "'epsilons[0]' = 1.0"),
    (NoiseConfig, {"steps": 0}, "'steps' = 0"),
    (StageConfig, {"epochs": 0}, "'epochs' = 0"),
]


@pytest.mark.parametrize("fn,kwargs,text", CASES, ids=[c[2] for c in CASES])
def test_bad_values_raise_a_qhybrid_error_naming_them(fn, kwargs, text):
    with pytest.raises(NewtonError) as err:
        fn(**kwargs)
    assert isinstance(err.value, QHybridError)
    assert text in str(err.value)


def test_curvature_kind_and_a_failed_qnewton_leave_the_model_alone():
    model = nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NewtonError, match="kind='exact'"):
        Curvature(
            model, [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))], None, kind="exact"
        )  # type: ignore[arg-type]
    with pytest.raises(NewtonError):
        QNewton(model.parameters(), damping=INF)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


CLI_CASES = [
    (["newton", "solve", "--set", "n=0"], "'n' = 0"),
    (["newton", "solve", "--set", "kappa=0.5"], "'kappa' = 0.5"),
    (["newton", "solve", "--set", 'backend="gpu"'], "'backend' = 'gpu'"),
    (["newton", "compare", "--set", "epochs=0"], "'epochs' = 0"),
    (["newton", "compare", "--set", "cg_max_iter=0"], "'cg_max_iter' = 0"),
    (["newton", "compare", "--set", "damping_floor=-1.0"], "'damping_floor' = -1.0"),
    (["newton", "compare", "--set", 'method="lbfgs"'], "'method' = 'lbfgs'"),
    (["newton", "hhl-loop", "--set", "clock_qubits=0"], "'clock_qubits' = 0"),
    (["newton", "crossover", "--set", "d=0"], "'d' = 0"),
    (["newton", "noise", "--set", "steps=-1"], "'steps' = -1"),
]


@pytest.mark.parametrize("argv,text", CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_cli_exits_2_naming_the_value(argv, text, capsys, tmp_path):
    from qhybrid.cli import main

    assert main([*argv[:2], "--out", str(tmp_path), *argv[2:]]) == 2
    assert text in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder was created


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def _unchanged(model, before):
    return all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("method", ["hessian_free", "blocks"])
def test_non_scalar_loss_is_named_before_any_weight_changes(method):
    model = nn.Linear(3, 2)
    before = _weights(model)
    batch = (torch.randn(8, 3), torch.randint(0, 2, (8,)))

    def per_example(m, b):  # forgot the reduction
        return nn.functional.cross_entropy(m(b[0]), b[1], reduction="none")

    with pytest.raises(NewtonError, match="not a scalar"):
        QNewton(model.parameters(), method=method).step(Closure(model, [batch], per_example))
    assert _unchanged(model, before)


@pytest.mark.parametrize("method", ["hessian_free", "blocks"])
def test_non_finite_curvature_products_are_named_before_any_weight_changes(method):
    # |z|^1.5 at z = 0: finite loss (1) and gradient (0 from this term), infinite second derivative
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    before = _weights(model)

    def loss_fn(m, x):
        z = m(x)
        return (z.abs() ** 1.5).mean() + ((z - 1) ** 2).mean()

    opt = QNewton(model.parameters(), method=method)
    with pytest.raises(NonFiniteError, match=r"curvature='ggn', damping=0.3"):
        opt.step(Closure(model, [torch.randn(8, 3)], loss_fn))
    assert _unchanged(model, before) and not opt.history


def test_frozen_parameters_stay_frozen():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    frozen = _weights(model[0])
    batch = (torch.randn(16, 3), torch.randint(0, 2, (16,)))
    opt = QNewton(model.parameters())
    loss0 = float(opt.step(Closure(model, [batch], _ce)))
    assert _unchanged(model[0], frozen)
    assert opt.history[-1]["loss_after"] < loss0


def test_unknown_qnewton_setting_is_named():
    from newton.optimizer import check_settings

    with pytest.raises(NewtonError, match="unknown QNewton setting"):
        check_settings({"dampnig": 0.1})
