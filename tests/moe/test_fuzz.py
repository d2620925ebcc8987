"""A fuzzer over every moe declaration (issue 21): each key of ``qhybrid moe train`` and ``moe
compress``, of the reproduce stage, of the subject and each declared argument of the passes gets
wrong types, 0, -1, 2^70, NaN, +-inf, empty and huge strings, unknown names and bad lists; each is
refused with one error line (exit 2 through the CLI), nothing is written (the model bit-identical),
within a time bound. New keys are covered when declared."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from moe.commands import CompressConfig, TrainSubjectConfig
from moe.compress import compress_experts, distill
from moe.drop import drop_experts
from moe.layers import MoEError
from moe.merge import merge_experts
from moe.quantize import allocate_bits, quantize_experts
from moe.stage import StageConfig
from moe.stats import collect_routing_stats
from moe.subject import SubjectConfig
from moe.tiny import tiny_batch, tiny_moe
from tests.hostile import (
    arguments,
    assert_declaration_refuses,
    declared_cases,
    hostile_python,
    run_cli,
)

COMMANDS = {"train": TrainSubjectConfig, "compress": CompressConfig}
# (key, value) pairs a declaration legitimately accepts although they look hostile
ALLOWED = {
    *((k, "0") for k in ("seed", "drop_to", "merge_to", "rank", "distill_steps", "stdlib_steps")),
    *((k, "1e308") for k in ("max_cpu_s", "max_memory_gb")),
    ("avg_bits", "0.0"),
    ("aux_loss_coef", "0.0"),
    ("model_dir", '""'),
    ("model_dir", '"/dev/zero"'),  # a path: refused when the command reads it (below)
}
SECONDS = 10.0  # the most one refused command may take


def _cases(cls: type) -> list[tuple[str, str]]:
    return declared_cases(cls, ALLOWED)


@pytest.mark.parametrize(
    "cls",
    [TrainSubjectConfig, CompressConfig, StageConfig, SubjectConfig],
    ids=lambda c: c.__name__,
)
def test_every_declared_key_refuses_its_hostile_values(cls: type) -> None:
    assert_declaration_refuses(cls, ALLOWED)


def _refused(rc: int, err: str, seconds: float, out: Path) -> None:
    """Exit 2, one ``error:`` line (the last; in this test process transformers, imported before
    the CLI silenced it, may draw a progress bar above it), no traceback, nothing written."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and lines[-1] == errors[0], err[-500:]
    assert "Traceback" not in err and seconds < SECONDS
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_exits_2_with_one_line_and_writes_nothing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    for key, raw in _cases(COMMANDS[command]):
        argv = ["moe", command, "--out", str(out), "--set", f"{key}={raw}"]
        _refused(*run_cli(capsys, argv), out)


def test_reproduce_refuses_a_bad_moe_value_before_any_stage_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage = ["--set", 'stages=["moe"]']
    for key, raw in _cases(StageConfig)[::4]:
        argv = ["reproduce", "--out", str(tmp_path), *stage, "--set", f"moe.{key}={raw}"]
        _refused(*run_cli(capsys, argv), tmp_path)
    rc, err, seconds = run_cli(
        capsys, ["reproduce", "--out", str(tmp_path), *stage, "--set", "moe.max_cpu_s=1.0"]
    )
    _refused(rc, err, seconds, tmp_path)
    assert "--set moe.max_cpu_s=" in err


@pytest.fixture(scope="module")
def subject() -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]], Any]:
    model = tiny_moe("mixtral")
    batches = [tiny_batch(model, batch=2, seq=12, seed=i) for i in range(2)]
    return model, batches, collect_routing_stats(model, batches)


def _bits(model: torch.nn.Module) -> dict[str, bytes]:
    return {
        k: v.detach().cpu().contiguous().numpy().tobytes() for k, v in model.state_dict().items()
    }


PASSES: dict[str, tuple[Callable[..., Any], tuple[str, ...], dict[str, Any]]] = {
    "merge_experts": (merge_experts, ("model", "stats", "num_experts"), {"num_experts": 4}),
    "drop_experts": (drop_experts, ("model", "stats", "num_experts", "batches"), {"num_experts": 4}),
    "compress_experts": (compress_experts, ("model", "stats"), {"keep_ratio": 0.5}),
    "quantize_experts": (quantize_experts, ("model", "stats"), {"avg_bits": 3.0}),
    "allocate_bits": (allocate_bits, ("model", "stats"), {}),
    "collect_routing_stats": (collect_routing_stats, ("model", "batches"), {}),
    "distill": (distill, ("student", "teacher", "batches", "device"), {}),
}  # fmt: skip
PASS_ALLOWED = {("seed", 0), ("ridge", 0.0), ("ce_weight", 0.0), ("max_cached_tokens", 0),
                ("rank", None), ("keep_ratio", None) }  # fmt: skip


@pytest.mark.parametrize("name", PASSES)
def test_every_pass_refuses_hostile_arguments_before_it_changes_the_model(
    name: str, subject: tuple[torch.nn.Module, list[dict[str, torch.Tensor]], Any]
) -> None:
    model, batches, stats = subject
    fn, skip, base = PASSES[name]
    m = copy.deepcopy(model)
    before = _bits(m)
    tried = 0
    for key, tp in arguments(fn, skip):
        for value in hostile_python(tp):
            if (key, value) in PASS_ALLOWED:
                continue
            tried += 1
            kwargs = {**base, key: value}
            with pytest.raises(MoEError) as err:
                if name == "collect_routing_stats":
                    fn(m, batches, **kwargs)
                elif name == "distill":
                    fn(m, model, batches, **kwargs)
                else:
                    fn(m, stats, **kwargs)
            assert "\n" not in str(err.value) and key in str(err.value)
            assert _bits(m) == before
    assert tried >= 3 * len(arguments(fn, skip))


def test_devices_fifos_and_files_as_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    afile = tmp_path / "afile"
    afile.write_text("x")
    folder = tmp_path / "mixtral"
    tiny_moe("mixtral", vocab=256).save_pretrained(folder)
    calib = tmp_path / "calib.txt"
    calib.write_text("\n\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(200)))
    capsys.readouterr()  # transformers' progress bar while saving
    out = tmp_path / "runs"
    base = ["moe", "compress", "--out", str(out), "--set", "merge_to=0", "--set", "seq_len=32"]
    for path in ("/dev/zero", fifo, afile, tmp_path / "missing"):
        _refused(*run_cli(capsys, [*base, "--set", f"model_dir='{path}'"]), out)
        checkpoint = [*base, "--set", f"model_dir='{folder}'", "--set", "tokenizer='bytes'"]
        _refused(*run_cli(capsys, [*checkpoint, "--set", f"calib='{path}'"]), out)
        tok = [*base, "--set", f"model_dir='{folder}'", "--set", f"calib='{calib}'"]
        _refused(*run_cli(capsys, [*tok, "--set", f"tokenizer='{path}'"]), out)
    for bad_out in ("/dev/null", fifo, afile):
        for command in ("train", "compress"):
            rc, err, seconds = run_cli(capsys, ["moe", command, "--out", str(bad_out)])
            assert rc == 2 and "is a file" in err and seconds < SECONDS, err
    assert fifo.exists() and afile.read_text() == "x"


def test_the_issue_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    for sets, match in (
        (("merge_to=100",), "merge_to=100 exceeds"),
        (("calib='missing.txt'",), "applies to checkpoints only"),
        (("drop_to=6", "drop_criterion='exact'", "drop_rounds=1", "merge_to=0",
          "max_cpu_s=1e-6"), "max_cpu_s"),
    ):  # fmt: skip
        argv = ["moe", "compress", "--out", str(out)]
        for s in sets:
            argv += ["--set", s]
        rc, err, seconds = run_cli(capsys, argv)
        _refused(rc, err, seconds, out)
        assert match in err, err
    for sets, match in ((("hidden=5",), "hidden=5 must be a multiple"),
                        (("intermediate=6",), "intermediate=6 must be a multiple of 4"),
                        (("steps=100000000",), "max_cpu_s")):  # fmt: skip
        rc, err, seconds = run_cli(capsys, ["moe", "train", "--out", str(out), "--set", sets[0]])
        _refused(rc, err, seconds, out)
        assert match in err, err
