"""The qhybrid command: help, the error path, and reproduce with a failing stage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qhybrid import cli, pipeline


def test_help_lists_every_part():
    proc = subprocess.run(
        [sys.executable, "-m", "qhybrid.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for name in ("grover", "llm", "newton", "fl", "moe", "reproduce"):
        assert name in proc.stdout


def test_user_errors_exit_2_with_the_message_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "qhybrid.cli", "reproduce", "--set", "core.steps='many'",
         "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: 'core.steps' must be an int, got 'many' (str)"
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written for a config that does not resolve


def test_unknown_preset_and_stage(capsys, tmp_path):
    assert cli.main(["reproduce", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'nope'; valid presets: ['quick']" in capsys.readouterr().err
    assert cli.main(["reproduce", "--set", "stages=['core', 'x']", "--out", str(tmp_path)]) == 2
    assert "unknown stage(s) ['x']" in capsys.readouterr().err


def test_reproduce_reports_a_failing_stage_and_keeps_the_others(tmp_path, monkeypatch):
    # Prepare: a stage module whose run_stage raises, standing in for the 'quantum' stage.
    (tmp_path / "broken_stage.py").write_text(
        "from dataclasses import dataclass\n"
        "TITLE = 'Broken'\n"
        "@dataclass(frozen=True)\nclass StageConfig:\n    x: int = 1\n"
        "def run_stage(run, config, *, seed, context):\n    raise RuntimeError('boom')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(pipeline.STAGES, "quantum", "broken_stage")
    out = tmp_path / "runs"
    # Execute: the failing stage sits between two good ones.
    code = cli.main(["reproduce", "--set", "stages=['core', 'quantum', 'core']",
                     "--set", "core.steps=20", "--out", str(out)])  # fmt: skip
    # Assert
    assert code == 1
    (run,) = out.iterdir()
    report = (run / "report.md").read_text()
    assert "**This stage failed:** `RuntimeError: boom`" in report
    assert report.count("## Core: shared training loop on digits") == 2
    assert "test accuracy" in report and (run / "figures" / "core_curves.png").is_file()
    assert "RuntimeError: boom" in (run / "quantum-error.txt").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["core"]["steps"] == 20 and config["quantum"] == {"x": 1}
    statuses = [
        json.loads(line)["status"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert statuses == ["ok", "failed", "ok"]


@pytest.mark.parametrize("part", ["grover", "llm", "newton", "fl", "moe"])
def test_each_part_subcommand_answers_help(part):
    proc = subprocess.run(
        [sys.executable, "-m", "qhybrid.cli", part, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
