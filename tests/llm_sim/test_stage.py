"""The reproduce stage runs end to end and hands the MoE model to the moe stage."""

from __future__ import annotations

import pytest

from llm_sim.stage import StageConfig, run_stage
from qhybrid.runs import create_run


@pytest.mark.slow
def test_stage_end_to_end(tmp_path):
    from transformers import AutoModelForCausalLM

    run = create_run("stage", root=tmp_path)
    context: dict = {}
    cfg = StageConfig(steps=3, train_size=60, test_size=3, hidden_size=32, num_layers=1, ood_n=(7,))
    section = run_stage(run, cfg, seed=0, context=context)
    assert section.status == "ok" and section.figures and len(section.tables) == 5
    llm = context["llm"]
    moe = AutoModelForCausalLM.from_pretrained(llm["moe_model"])
    assert type(moe).__name__ == "MixtralForCausalLM"
    metrics = llm["eval_fn"](moe)
    assert set(metrics) == {"set_acc", "tvd", "p_marked_err", "parsed"}
    assert llm["calibration"][0]["input_ids"].shape == llm["calibration"][0]["attention_mask"].shape
