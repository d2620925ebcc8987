"""The subject task, the ``qhybrid moe`` commands and the reproduce stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe.subject import SubjectConfig, eval_mask, make_task


def test_task_rules_hold_on_every_determined_position() -> None:
    cfg = SubjectConfig(train_sequences=64, test_sequences=64)
    data = make_task(cfg, seed=3)
    v, n_dom = cfg.modulus, 4
    seq = data.test
    dom = seq[:, 0] - 1
    x = seq[:, 1:] - 1 - n_dom - dom[:, None] * v  # values in Z_V
    assert ((x >= 0) & (x < v)).all()
    fib = dom == 1
    assert torch.equal(x[fib, 2:], (x[fib, 1:-1] + x[fib, :-2]) % v)
    step = dom == 3
    d = (x[step, 1] - x[step, 0])[:, None]
    assert torch.equal(x[step, 2:], (x[step, 1:-1] + d) % v)
    # the same token always follows the same token in the permutation domain
    perm = dom == 0
    pairs = {
        (int(a), int(b)) for a, b in zip(x[perm, :-1].flatten(), x[perm, 1:].flatten(), strict=True)
    }
    assert len({a for a, _ in pairs}) == len(pairs)
    assert eval_mask(seq)[:, 2:].all() and not eval_mask(seq)[:, :2].any()


def test_cli_rejects_a_folder_that_is_not_a_subject(tmp_path: Path) -> None:
    from qhybrid.cli import main

    assert (
        main(["moe", "compress", "--out", str(tmp_path), "--set", f"model_dir='{tmp_path}'"]) == 2
    )


@pytest.mark.slow
def test_cli_train_then_compress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qhybrid.cli import main

    small = ["--set", "steps=4", "--set", "train_sequences=64", "--set", "test_sequences=32"]
    assert main(["moe", "train", "--out", str(tmp_path), *small]) == 0
    subject = next(tmp_path.glob("moe-train-*/subject"))
    assert (subject / "subject.json").is_file()
    code = main(
        [
            "moe",
            "compress",
            "--out",
            str(tmp_path),
            "--set",
            f"model_dir='{subject}'",
            "--set",
            "calib_sequences=32",
            "--set",
            "merge_to=4",
            "--set",
            "keep_ratio=0.5",
            "--set",
            "distill_steps=2",
            "--set",
            "avg_bits=3.0",
        ]
    )
    assert code == 0
    assert "retention" in capsys.readouterr().out
    run = next(tmp_path.glob("moe-compress-*"))
    plan = json.loads((run / "compressed" / "moe_plan.json").read_text())
    assert [op["op"] for op in plan["ops"]][:2] == ["merge", "merge"]
    from moe.checkpoint import load_compressed

    assert load_compressed(run / "compressed").config.moe_compression["ops"] == plan["ops"]


@pytest.mark.slow
def test_reproduce_stage(tmp_path: Path) -> None:
    from moe.stage import StageConfig, run_stage
    from qhybrid.runs import create_run

    run = create_run("t", root=tmp_path)
    cfg = StageConfig(
        train_steps=30,
        train_sequences=256,
        test_sequences=64,
        calib_sequences=32,
        distill_steps=3,
        stdlib_steps=5,
    )
    context: dict = {}
    section = run_stage(run, cfg, seed=0, context=context)
    assert section.tables and section.figures and section.figures[0][1].is_file()
    assert context["moe"]["roundtrip_max_diff"] == 0.0
    packed = context["moe"]["packed"]
    assert packed["diff"] == 0.0 and packed["disk"] <= 0.13 * packed["disk fp32"]
    assert packed["resident"] == packed["disk"]
    methods = {row["method"]: row for row in context["moe"]["rows"]}
    assert methods["merge 8->4 MC-SMoE port (no refit)"]["LS refit on calib"] is False
    assert methods["merge 8->4 + LS refit"]["LS refit on calib"] is True
    stdlib = context["moe_stdlib"]
    assert set(stdlib["routing_entropy"]) == {"code", "docstrings", "comments", "tables", "overlap"}
    assert all(0 <= v <= 1 for v in stdlib["routing_entropy"].values())
    assert (
        stdlib["rows"][-1]["expert MB"] == stdlib["rows"][0]["expert MB"] / 8
    )  # packed 3-bit: 4 bits
