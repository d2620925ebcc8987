"""Training through qhybrid.train, save/load, fine-tuning (full and LoRA), evaluation end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_sim.data import Problem, SplitSpec, TaskFormat, char_tokenizer, prompt_text
from llm_sim.evaluate import (
    EvalConfig,
    aggregate,
    baseline_records,
    evaluate_run,
    parse_compact_prompt,
)
from llm_sim.finetune import FinetuneConfig, finetune
from llm_sim.model import ModelConfig, build_model
from llm_sim.training import LLMTrainConfig, train_run
from qhybrid.errors import QHybridError

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
SPEC = SplitSpec(train_size=64, test_size=6, ood_n=(7, 12))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    cfg = LLMTrainConfig(
        splits=SPEC, model=TINY, steps=4, batch_size=16, seeds=(0, 1), device="cpu"
    )
    return out, train_run(cfg, out, progress=False)


def test_training_saves_checkpoints_and_a_loadable_model(trained_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, trained = trained_run
    assert [t.result.step for t in trained] == [4, 4]
    assert (out / "checkpoints-seed0" / "latest").is_file()
    assert (out / "splits.json").is_file()
    t = trained[0]
    loaded = AutoModelForCausalLM.from_pretrained(t.path)
    tok = AutoTokenizer.from_pretrained(t.path)
    ids = torch.tensor([tok.encode("qubits 3 h repeat 2 oracle", add_special_tokens=False)])
    t.model.eval()
    torch.testing.assert_close(loaded(ids).logits, t.model.cpu()(ids).logits)
    # different seeds give different models
    p0 = next(trained[0].model.parameters())
    p1 = next(trained[1].model.parameters())
    assert not torch.equal(p0.cpu(), p1.cpu())


def test_evaluate_run_writes_tables_and_plot(trained_run, tmp_path):
    out, _ = trained_run
    cfg = EvalConfig(run=str(out), bootstrap=20, max_per_split=2, device="cpu")
    res = evaluate_run(cfg, tmp_path)
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "eval.md").is_file()
    assert (tmp_path / "eval_vs_n.png").stat().st_size > 1000
    tables = json.loads((tmp_path / "eval.json").read_text())["tables"]
    assert set(tables) == {"test_id", "test_ood_n", "test_ood_t", "test_ood_k"}
    row = tables["test_id"]["all"]["ceiling"][0]
    assert row["set_acc"] == 1.0 and row["tvd"] < 1e-4  # parser + closed form is exact
    model_rows = tables["test_ood_n"]["n"]["model"]
    assert [r["n"] for r in model_rows] == [7, 12] and all(r["seeds"] == 2 for r in model_rows)
    assert "untrained" in tables["test_id"]["all"]
    assert "set_acc" in (tmp_path / "eval.md").read_text()
    assert res["seeds"] == ["model-seed0", "model-seed1"]


def test_evaluate_run_rejects_a_folder_without_models(tmp_path):
    with pytest.raises(QHybridError, match="model-seed"):
        evaluate_run(EvalConfig(run=str(tmp_path)), tmp_path)


def test_aggregate_mean_over_seeds_and_interval():
    seed_a = [{"n": 3, "set_acc": 1.0}, {"n": 3, "set_acc": 0.0}]
    seed_b = [{"n": 3, "set_acc": 1.0}, {"n": 3, "set_acc": 1.0}]
    (row,) = aggregate([seed_a, seed_b], "n", metrics=("set_acc",), n_boot=400)
    assert row["set_acc"] == pytest.approx(0.75)  # mean of the per-seed means 0.5 and 1.0
    assert 0.0 <= row["set_acc_lo"] <= 0.75 <= row["set_acc_hi"] <= 1.0
    assert row["seeds"] == 2 and row["problems"] == 2


def test_shortcut_baseline_fails_exactly_where_k_is_not_optimal():
    p_opt, p_k0 = Problem(3, ("101",)), Problem(3, ("101",), 0)
    recs = baseline_records([p_opt, p_k0], TaskFormat())
    # p = 1 on 101; truth 121/128 (k*=2) and 1/8 (k=0)
    assert recs["oracle_1/t"][0]["p_marked_err"] == pytest.approx(7 / 128)
    assert recs["oracle_1/t"][1]["p_marked_err"] == pytest.approx(7 / 8)
    assert recs["ceiling"][1]["p_marked_err"] == pytest.approx(0.0, abs=1e-12)
    assert recs["uniform"][1]["tvd"] == pytest.approx(0.0, abs=1e-12)
    assert parse_compact_prompt(prompt_text(Problem(12, ("0" * 12, "1" * 12), 5))) == Problem(
        12, ("0" * 12, "1" * 12), 5
    )


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A tiny 'pretrained' Llama with a character tokenizer, saved the way a hub checkpoint is."""
    path = tmp_path_factory.mktemp("base")
    tok = char_tokenizer()
    torch.manual_seed(0)
    build_model(TINY, tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_from_local_folder(tiny_pretrained, tmp_path, method):
    from transformers import AutoModelForCausalLM

    # LoRA on the anchor's QASM3 input (the character tokenizer reads any ASCII), full on "bits"
    fmt = "qasm3" if method == "lora" else "bits"
    cfg = FinetuneConfig(base=str(tiny_pretrained), method=method, task=TaskFormat(fmt=fmt, answer="dict"),
                         splits=SplitSpec(train_n=(3,), train_size=16, test_size=2, ood_n=(4,)),
                         steps=2, batch_size=4, lr=1e-2, lora_r=2, device="cpu")  # fmt: skip
    res = finetune(cfg, tmp_path, progress=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_pretrained)
    tuned = AutoModelForCausalLM.from_pretrained(res.path)
    q_base = base.model.layers[0].self_attn.q_proj.weight
    q_tuned = tuned.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_base, q_tuned)  # the update reached q_proj (merged LoRA or full)
    k_same = torch.equal(
        base.model.layers[0].self_attn.k_proj.weight, tuned.model.layers[0].self_attn.k_proj.weight
    )
    if method == "lora":
        assert res.trainable < res.total / 4
        assert k_same  # LoRA only targets q_proj and v_proj
        assert (tmp_path / "adapter-seed0" / "adapter_config.json").is_file()
    else:
        assert res.trainable == res.total and not k_same


def test_finetune_needs_a_local_folder(tmp_path):
    with pytest.raises(QHybridError, match="nothing is downloaded"):
        finetune(FinetuneConfig(base=str(tmp_path / "missing")), tmp_path)


@pytest.mark.slow
def test_cli_train_and_eval(tmp_path, capsys):
    from qhybrid.cli import main

    sets = ["--set", "steps=2", "--set", "seeds=[0]", "--set", "batch_size=8", "--set", "device='cpu'",
            "--set", "splits.train_size=16", "--set", "splits.test_size=3", "--set", "splits.ood_n=[7]",
            "--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.num_heads=2",
            "--set", "model.arch='mixtral'"]  # fmt: skip
    assert main(["llm", "train", "--out", str(tmp_path), *sets]) == 0
    run = next(tmp_path.glob("llm-train-*"))
    assert (
        main(
            [
                "llm",
                "eval",
                "--out",
                str(tmp_path),
                "--set",
                f"run='{run}'",
                "--set",
                "bootstrap=10",
                "--set",
                "max_per_split=2",
            ]
        )
        == 0
    )
    assert "set_acc" in capsys.readouterr().out
