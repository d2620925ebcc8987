"""The reproduce stage ``fl``: its named steps on a tiny config, and its verdicts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pqc_fl.stage import StageConfig, configure, judge, run_stage
from qhybrid.report import Section
from qhybrid.runs import create_run

TINY = StageConfig(
    schemes=("ed25519", "ml-dsa-44"),
    budget_s=0.001,
    fl_rounds=2,
    engine="inprocess",
    cost_models=("mlp",),
    cost_clients=(2,),
    local_steps=2,
    honest_updates=4,
    byz_rounds=1,
    byz_strategies=("fedavg", "fedmedian"),
)


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Section, dict[str, Any]]:
    run = create_run("stage", root=tmp_path_factory.mktemp("runs"))
    context: dict[str, Any] = {}
    section = run_stage(run, TINY, seed=0, context=context)
    return run.path, section, context


def test_configure_checks_every_run_before_anything_runs() -> None:
    plan = configure(TINY, seed=3)
    assert plan.signed.sign and not plan.plain.sign and plan.signed.seed == plan.plain.seed == 3
    assert plan.attacked.attack == "tensor_bitflip" and plan.attacked.attacker == 1
    assert plan.byzantine.num_clients == 10 and plan.byzantine.rounds == TINY.byz_rounds
    assert {p.local.steps for p in (plan.signed, plan.byzantine)} == {TINY.local_steps}
    with pytest.raises(ValueError, match="seed"):
        configure(TINY, seed=-1)  # the top-level seed is checked here, before any experiment


def test_the_stage_runs_its_steps_and_passes(
    stage_run: tuple[Path, Section, dict[str, Any]],
) -> None:
    path, section, context = stage_run
    assert section.status != "failed", section.error
    assert context["fl"] == {
        "identical_weights": True,
        "rejection_rate": 1.0,
        "insider_integrity_ok": True,
    }
    out = json.loads((path / "fl" / "stage.json").read_text())
    assert set(out) == {"hardware", "primitives", "fl", "round_costs", "attacks", "insider"}
    assert [(r["scheme"], r["backend"]) for r in out["primitives"]][0] == (
        "ed25519",
        "cryptography",
    )
    assert len(out["fl"]["signed"]) == len(out["fl"]["unsigned"]) == TINY.fl_rounds
    assert [r["reason"] for r in out["fl"]["rejections"]] == ["digest_mismatch"] * TINY.fl_rounds
    assert [r["attack"] for r in out["insider"]["accuracy"]] == ["none"] * 2 + ["sign_flip"] * 2
    assert (path / "figures" / "pqc_fl_overview.png").stat().st_size > 10_000
    assert (path / "figures" / "pqc_fl_byzantine.png").stat().st_size > 10_000
    titles = [t for t, _ in section.tables]
    assert len(titles) == 5 and titles[2] == "Attack suite (ML-DSA-44, digest mode)"
    assert f"rejected {TINY.fl_rounds}/{TINY.fl_rounds}" in section.headline


@pytest.mark.parametrize(
    "spoil",
    [
        lambda o: o["fl"].update(identical_weights=False),
        lambda o: o["attacks"].update(rejection_rate=0.9),
        lambda o: o["attacks"].update(false_rejections=1),
        lambda o: o["insider"]["integrity"][0].update(honest_rejected=1),
        lambda o: o["insider"]["integrity"][0].update(all_rejected_as_expected=False),
        lambda o: o["fl"].update(flower={"matches_inprocess": False}),
    ],
)
def test_judge_fails_the_section_for_each_broken_promise(
    stage_run: tuple[Path, Section, dict[str, Any]], spoil: Any
) -> None:
    path, _, _ = stage_run
    out = json.loads((path / "fl" / "stage.json").read_text())
    good = Section("x")
    judge(good, copy.deepcopy(out), {})
    assert good.status != "failed"
    spoil(out)
    bad = Section("x")
    context: dict[str, Any] = {}
    judge(bad, out, context)
    assert bad.status == "failed" and "attack" in bad.error and "fl" in context
