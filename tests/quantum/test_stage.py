"""The reproduce stage runs end to end on a tiny config and reports real numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from qhybrid.runs import create_run
from quantum.stage import StageConfig, run_stage


@pytest.mark.slow  # ~10 s idle; `qhybrid reproduce` runs the stage too
def test_stage_writes_tables_figure_and_context(tmp_path):
    run = create_run("quantum-stage", root=tmp_path, seed=0)
    cfg = StageConfig(
        train_count=40,
        test_count=4,
        ood_n_max=9,
        ood_n_count=4,
        curve_qubits=(3,),
        curve_max_iterations=3,
        length_qubits=(3, 8),
        qasm3_max_n=3,
    )
    context: dict = {}
    section = run_stage(run, cfg, seed=0, context=context)
    captions = [t[0] for t in section.tables]
    assert any("Dataset splits" in c for c in captions)
    splits = section.tables[0][1]
    assert [r["split"] for r in splits] == [
        "train",
        "test_id",
        "test_ood_n",
        "test_ood_t",
        "test_ood_k",
    ]
    assert splits[0]["problems"] == 40
    agree = section.tables[2][1]
    assert all(r["|aer - exact|"] < 1e-10 and r["|statevector - exact|"] < 1e-10 for r in agree)
    assert Path(section.figures[0][1]).exists()
    assert Path(context["quantum"]["tokenizer"], "tokenizer.json").exists()
    assert Path(context["quantum"]["dataset"], "manifest.json").exists()
