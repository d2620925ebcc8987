"""Run folders: provenance files, metrics, atomic writes."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

import pytest

from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_open, atomic_write_json, create_run, read_metrics


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1  # learning rate
    layers: tuple[int, ...] = (4, 2)  # widths


def test_run_folder_holds_config_and_provenance(tmp_path):
    run = create_run("exp", Cfg(), root=tmp_path, seed=123)
    assert run.path.parent == tmp_path and run.path.name.startswith("exp-")
    assert json.loads((run.path / "config.json").read_text()) == {"lr": 0.1, "layers": [4, 2]}
    env = json.loads((run.path / "env.json").read_text())
    assert env["seed"] == 123
    import qiskit
    import torch
    import transformers

    versions = env["versions"]
    assert versions["torch"] == torch.__version__
    assert versions["qiskit"] == qiskit.__version__
    assert versions["transformers"] == transformers.__version__
    for key in ("python", "qiskit-aer", "flwr", "cryptography"):
        assert key in versions
    assert env["cpu"] and env["cpu_count"] >= 1 and isinstance(env["gpu"], list)
    assert "git_revision" in env


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    a, b = create_run("x", root=tmp_path), create_run("x", root=tmp_path)
    assert a.path != b.path


def test_bad_run_name_is_a_clear_error(tmp_path):
    with pytest.raises(QHybridError, match="run name"):
        create_run("a/b", root=tmp_path)


def test_metrics_append_and_read_back(tmp_path):
    run = create_run("m", root=tmp_path)
    run.log_metrics({"step": 1, "loss": 0.5})
    run.log_metrics({"step": 2, "loss": 0.25})
    assert read_metrics(run.path) == [{"loss": 0.5, "step": 1}, {"loss": 0.25, "step": 2}]


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write('{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # no temporary left behind


def test_figures_are_saved_as_png(tmp_path):
    import matplotlib.pyplot as plt

    run = create_run("f", root=tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = run.save_figure(fig, "figures/line")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_ISREG(os.stat(path).st_mode)


def test_atomic_files_get_normal_permissions_unless_asked(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "public.json", {"a": 1})
        from qhybrid.runs import atomic_write_text

        atomic_write_text(tmp_path / "secret.key", "s", permissions=0o600)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "public.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600
