"""The experiments on tiny settings, the CLI, and the reproduce stage (slow)."""

from __future__ import annotations

import math

import pytest

from newton.experiments import (
    CompareConfig,
    CrossoverConfig,
    NoiseConfig,
    compare_optimizers,
    crossover_curves,
    noise_robustness,
)
from qhybrid.cli import main


@pytest.mark.slow
def test_compare_qnewton_beats_sgd_per_epoch_on_digits():
    res = compare_optimizers(CompareConfig(hidden=8, epochs=2, optimizers=("qnewton", "sgd")))
    by = {r["optimizer"]: r for r in res["summary"]}
    assert by["qnewton"]["final_train_loss"] < by["sgd"]["final_train_loss"]
    assert by["qnewton"]["epochs_to_sgd_final"] is not None
    assert by["qnewton"]["epochs_to_sgd_final"] <= 2
    assert res["kappa"] and all(r["damping"] > 0 for r in res["kappa"])  # one record per step


def test_crossover_and_paper_mode():
    res = crossover_curves(
        CrossoverConfig(kappas=(10.0, 1e4), gate_times_s=(1e-9, 1e-18), flops=1e10)
    )
    rows = {
        (r["io"], r["against"], r["query_model"], r["gate_time_s"], r["kappa"]): math.inf
        if r["n_star"] is None
        else r["n_star"]
        for r in res["rows"]
    }
    # faster gates and smaller kappa move the crossover down
    assert (
        rows[(False, "cholesky", "jennings", 1e-18, 10.0)]
        <= rows[(False, "cholesky", "jennings", 1e-9, 10.0)]
    )
    assert (
        rows[(False, "cholesky", "jennings", 1e-9, 10.0)]
        <= rows[(False, "cholesky", "jennings", 1e-9, 1e4)]
    )
    paper = {r["n"]: r["max_quantum_kappa"] for r in res["paper_mode"]}
    assert 1e4 <= paper[10**4] <= 2e4  # the paper's "kappa > 1e4 stays classical" at N = 1e4


@pytest.mark.slow
def test_noise_injection_still_converges():
    res = noise_robustness(NoiseConfig(epsilons=(0.0, 0.1), steps=6, hidden=4, target_loss=1.5))
    first, noisy = res["curves"][0.0], res["curves"][0.1]
    assert noisy[-1] < noisy[0] and first[-1] < first[0]
    assert res["rows"][1]["steps_to_target"] is not None


def test_cli_solve_and_bad_input(capsys):
    assert main(["newton", "solve", "--set", "n=4", "--set", 'backend="hhl"']) == 0
    assert "hhl_aer" in capsys.readouterr().out
    assert main(["newton", "solve", "--set", "n=20", "--set", 'backend="hhl"']) == 2
    assert "N <= 16" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_stage(tmp_path):
    from newton.stage import StageConfig, run_stage
    from qhybrid.runs import create_run

    run = create_run("stage", root=tmp_path)
    context: dict = {}
    section = run_stage(
        run, StageConfig(epochs=2, hhl_steps=3, noise_steps=4), seed=0, context=context
    )
    assert len(section.tables) == 4 and len(section.figures) == 4
    assert context["newton"]["hhl_relative_gap"] < 0.01


def test_import_newton_is_light():
    import subprocess
    import sys

    code = "import sys, newton, newton.commands; print('torch' in sys.modules, 'qiskit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
