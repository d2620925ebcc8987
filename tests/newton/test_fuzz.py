"""A fuzzer over every newton declaration (issue 21): each key of each ``qhybrid newton`` command,
of the reproduce stage and of the public constructors gets wrong types, 0, -1, 2^70, NaN, +-inf,
empty and huge strings, unknown names and bad lists; each is refused with one error line (exit 2
through the CLI), nothing is written, within a time bound. New keys are covered when declared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from newton.commands import SolveConfig
from newton.cost import QuantumCostModel
from newton.damping import LevenbergMarquardt
from newton.errors import BadValueError
from newton.experiments import CompareConfig, CrossoverConfig, HHLLoopConfig, NoiseConfig
from newton.optimizer import QNewton
from newton.scheduler import SchedulerConfig
from newton.stage import StageConfig
from qhybrid.config import resolve_config
from qhybrid.errors import QHybridError
from tests.hostile import (
    arguments,
    assert_declaration_refuses,
    declared_cases,
    hostile_python,
    leaves,
    run_cli,
)

COMMANDS = {
    "compare": CompareConfig,
    "hhl-loop": HHLLoopConfig,
    "crossover": CrossoverConfig,
    "noise": NoiseConfig,
    "solve": SolveConfig,
}
# (key, value) pairs a declaration legitimately accepts although they look hostile
ALLOWED = {
    *((k, "0") for k in ("seed", "shots", "max_train", "qnewton_batch_size")),
    *((k, "1e308") for k in ("max_cpu_s", "max_memory_gb", "target_loss", "flops")),
    *((k, "0.0") for k in ("target_loss", "flops", "kappa_target", "damping_floor", "cg_tol")),
    ("sgd_momentum", "0.0"),
    ("mnist_dir", '""'),
}
SECONDS = 10.0  # the most one refused command may take


def _cases(cls: type) -> list[tuple[str, str]]:
    return declared_cases(cls, ALLOWED)


@pytest.mark.parametrize("cls", [*COMMANDS.values(), StageConfig], ids=lambda c: c.__name__)
def test_every_declared_key_refuses_its_hostile_values(cls: type) -> None:
    assert_declaration_refuses(cls, ALLOWED)


def _refused(rc: int, err: str, seconds: float, out: Path) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-500:]
    assert "Traceback" not in err and seconds < SECONDS
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_exits_2_with_one_line_and_writes_nothing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    for key, raw in _cases(COMMANDS[command]):
        argv = ["newton", command, "--out", str(out), "--set", f"{key}={raw}"]
        _refused(*run_cli(capsys, argv), out)


def test_reproduce_refuses_a_bad_newton_value_before_any_stage_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage = ["--set", 'stages=["newton"]']
    for key, raw in _cases(StageConfig)[::5] + [("epochs", "1000000")]:
        argv = ["reproduce", "--out", str(tmp_path), *stage, "--set", f"newton.{key}={raw}"]
        _refused(*run_cli(capsys, argv), tmp_path)
    rc, err, seconds = run_cli(
        capsys, ["reproduce", "--out", str(tmp_path), *stage, "--set", "newton.max_cpu_s=0.01"]
    )
    _refused(rc, err, seconds, tmp_path)
    assert "newton stage: " in err and "--set newton.max_cpu_s=" in err


@pytest.mark.parametrize(
    ("target", "skip"),
    [
        (QNewton.__init__, ("params", "scheduler")),
        (SchedulerConfig, ()),
        (LevenbergMarquardt, ()),
        (QuantumCostModel, ()),
    ],
    ids=["QNewton", "SchedulerConfig", "LevenbergMarquardt", "QuantumCostModel"],
)
def test_the_public_constructors_refuse_hostile_arguments(
    target: Any, skip: tuple[str, ...]
) -> None:
    allowed = {("fallback_lr", 0.0), ("min_damping", 0.0), ("damping_floor", 0.0),
               ("cg_tol", 0.0), ("exact_kappa_below", 0), ("hessian_free_above", 0),
               ("max_backtracks", 0), ("seed", 0), ("load_gates_per_entry", 0.0), ("low", 0.0),
               ("min_delta", 0.0), ("kappa_target", None), ("max_step_norm", None),
               ("curvature_batch", None), ("hhl_shots", None)}  # fmt: skip
    names = (
        arguments(target, skip)
        if callable(target) and not isinstance(target, type)
        else [(k, tp) for k, tp in leaves(target)]
    )
    tried = 0
    for name, tp in names:
        for value in hostile_python(tp):
            if (name, value) in allowed:
                continue
            tried += 1
            with pytest.raises(BadValueError) as err:
                if isinstance(target, type):
                    target(**{name: value})
                else:
                    QNewton(torch.nn.Linear(2, 2).parameters(), **{name: value})
            assert "\n" not in str(err.value) and name in str(err.value)
    assert tried >= 3 * len(names)


def _mnist_folder(path: Path, images: bytes) -> Path:
    path.mkdir()
    for split in ("train", "t10k"):
        (path / f"{split}-images-idx3-ubyte").write_bytes(images)
        (path / f"{split}-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")
    return path


def test_devices_fifos_and_broken_files_as_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    afile = tmp_path / "afile"
    afile.write_text("x")
    garbage = _mnist_folder(tmp_path / "garbage", b"\x89PNG garbage")
    truncated = _mnist_folder(tmp_path / "truncated", b"\0\0\x08\x03\0\0\0\x01\0\0\0\x1c\0\0")
    out = tmp_path / "runs"
    for folder in ("/dev/zero", fifo, afile, tmp_path / "missing", garbage, truncated):
        argv = ["newton", "compare", "--out", str(out), "--set", 'dataset="mnist"',
                "--set", f"mnist_dir='{folder}'"]  # fmt: skip
        _refused(*run_cli(capsys, argv), out)
    for bad_out in ("/dev/null", fifo, afile):
        for command in ("compare", "hhl-loop", "crossover", "noise"):
            rc, err, seconds = run_cli(capsys, ["newton", command, "--out", str(bad_out)])
            assert rc == 2 and "is a file" in err and seconds < SECONDS, err
    assert fifo.exists() and afile.read_text() == "x"


def test_the_issue_examples() -> None:
    from newton import sparsify

    result = sparsify(np.eye(3))  # the function, not the module it lives in
    assert np.array_equal(result.matrix, np.eye(3))
    with pytest.raises(QHybridError, match="must be all different"):
        CompareConfig(optimizers=("sgd", "sgd"))
    for name in ("compare", "hhl-loop", "crossover", "noise", "solve"):
        with pytest.raises(QHybridError, match="max_cpu_s"):
            resolve_config(COMMANDS[name], overrides=["max_cpu_s=1e-9"])
