"""The reproduce stage trains on the quantum stage's dataset and hands the MoE model to the moe stage."""

from __future__ import annotations

import pytest

from llm_sim.stage import StageConfig, run_stage
from qhybrid.runs import create_run
from quantum.dataset import DatasetSpec, SplitSpec, generate_dataset


@pytest.mark.slow
def test_stage_end_to_end(tmp_path):
    from transformers import AutoModelForCausalLM

    spec = DatasetSpec(
        renderings=("compact",),
        train=SplitSpec(2, 5, 1, 4, 60, off_optimal=0.3),
        test_id=SplitSpec(2, 5, 1, 4, 4),
        test_ood_n=SplitSpec(7, 9, 1, 2, 4, off_optimal=0.5),
        test_ood_t=SplitSpec(5, 5, 5, 6, 2),
        test_ood_k=SplitSpec(2, 5, 1, 2, 2, off_optimal=1.0),
        aer_check_per_split=0,
        parquet=False,
    )
    generate_dataset(spec, tmp_path / "ds")
    run = create_run("stage", root=tmp_path)
    context: dict = {"quantum": {"dataset": str(tmp_path / "ds")}}
    cfg = StageConfig(steps=3, hidden_size=32, num_layers=1, max_test=4)
    section = run_stage(run, cfg, seed=0, context=context)
    assert section.status == "ok" and section.figures and len(section.tables) == 5
    assert "quantum stage's dataset" in section.text
    llm = context["llm"]
    moe = AutoModelForCausalLM.from_pretrained(llm["moe_model"])
    assert type(moe).__name__ == "MixtralForCausalLM"
    metrics = llm["eval_fn"](moe)
    assert set(metrics) == {"set_acc", "tvd_raw", "p_marked_err", "parsed"}
    batch = llm["calibration"][0]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["position_ids"].shape
    moe(**batch)  # the calibration batches are model inputs as they are
