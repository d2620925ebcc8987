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
        [
            sys.executable,
            "-m",
            "qhybrid.cli",
            "reproduce",
            "--set",
            "core.steps='many'",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
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
    code = cli.main(
        [
            "reproduce",
            "--set",
            "stages=['core', 'quantum', 'core']",
            "--set",
            "core.steps=20",
            "--out",
            str(out),
        ]
    )
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


def _stage_module(tmp_path, monkeypatch, body: str) -> None:
    """Stand a stage module with ``run_stage`` = ``body`` in for the 'quantum' stage."""
    name = f"fake_stage_{tmp_path.name}"  # one module per test: imports are cached
    (tmp_path / f"{name}.py").write_text(
        "from dataclasses import dataclass\n"
        "from qhybrid.report import Section\n"
        "TITLE = 'Fake'\n"
        "@dataclass(frozen=True)\nclass StageConfig:\n    x: int = 1\n"
        f"def run_stage(run, config, *, seed, context):\n    {body}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(pipeline.STAGES, "quantum", name)


def test_reproduce_talks_stage_by_stage_with_a_heartbeat(tmp_path, monkeypatch, capsys):
    body = "import time; time.sleep(0.35); return Section('Fake', headline='x 1')"
    _stage_module(tmp_path, monkeypatch, body)
    monkeypatch.setattr(pipeline, "HEARTBEAT_SECONDS", 0.1)
    code = cli.main(["reproduce", "--set", "stages=['quantum']", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("run folder: ")
    assert out[1] == "[1/1] quantum: Fake"
    assert any(line.startswith("  quantum: running, ") for line in out[2:-2])
    assert out[-2].startswith("[1/1] quantum: ok in 0 s; x 1")
    assert out[-1].startswith("report: ")


def test_ctrl_c_exits_130_with_the_report_marked_interrupted(tmp_path, monkeypatch, capsys):
    _stage_module(tmp_path, monkeypatch, "raise KeyboardInterrupt")
    out = tmp_path / "runs"
    code = cli.main(
        [
            "reproduce",
            "--set",
            "stages=['core', 'quantum']",
            "--set",
            "core.steps=5",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip().splitlines()[-1] == "error: interrupted (qhybrid reproduce)"
    assert "Traceback" not in err
    (run,) = out.iterdir()
    report = (run / "report.md").read_text()
    assert report.startswith("# qhybrid reproduce (interrupted)")
    assert "| Fake | interrupted |" in report and "**Interrupted**" in report
    assert "## Core: shared training loop on digits" in report  # what finished is kept


def test_verbose_works_after_the_subcommand(tmp_path, capsys):
    assert cli.main(["reproduce", "-v", "--set", "stages=[]", "--out", str(tmp_path)]) == 0
    assert cli.main(["-v", "presets"]) == 0
    assert "reproduce_quick" in capsys.readouterr().out


def test_help_lists_config_keys_stages_and_presets():
    proc = subprocess.run(
        [sys.executable, "-m", "qhybrid.cli", "reproduce", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "quick " in proc.stdout and "presets (--preset NAME):" in proc.stdout
    assert "  core.steps (int, default 300, >= 1): optimizer steps" in proc.stdout
    for stage in pipeline.STAGES:
        assert f"\n{stage}: " in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "qhybrid.cli", "grover", "generate", "--help"],
        capture_output=True,
        text=True,
    )
    assert "  train.count (int, default 2000): problems in the split" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce", "--out", "{file}"], "is a file; pass a folder"),
        (["reproduce", "--config", "{latin}"], "is not UTF-8 text"),
        (["reproduce", "--config", "{tmp}"], "is a folder or device"),
        (["reproduce", "--set", "core.steps=[1,"], "is not a TOML value"),
        (["reproduce", "--set", "core.steps=0"], "'core.steps' = 0 must be >= 1"),
        (["reproduce", "--set", "core.lr=nan"], "'core.lr' is NaN"),
        (["reproduce", "--set", "llm.steps=-3"], "'llm.steps' = -3 must be >= 1"),
        (["reproduce", "--set", "quantum.ood_n_max=99"], "'quantum.ood_n_max' = 99 must be <= 60"),
    ],
)
def test_bad_reproduce_inputs_are_one_error_line(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "latin.toml").write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    subs = {
        "{file}": str(tmp_path / "file"),
        "{latin}": str(tmp_path / "latin.toml"),
        "{tmp}": str(tmp_path),
    }
    argv = [subs.get(a, a) for a in argv]
    out = tmp_path / "runs"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()  # nothing written


def test_sigterm_exits_143_with_the_report_marked_interrupted(tmp_path, monkeypatch, capsys):
    import signal

    body = "import os, signal, time; os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)"
    _stage_module(tmp_path, monkeypatch, body)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["reproduce", "--set", "stages=['quantum']", "--out", str(tmp_path / "r")])
    assert code == 143
    assert capsys.readouterr().err.strip() == "error: terminated (qhybrid reproduce)"
    (run,) = (tmp_path / "r").iterdir()
    assert "**Interrupted** (Ctrl-C or a kill)" in (run / "report.md").read_text()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again
