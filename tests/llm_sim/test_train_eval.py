"""Training through qhybrid.train (resumable), fine-tuning (full and LoRA), evaluation, the command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import llm_sim.training as training
from llm_sim.data import TaskFormat, prompt_text
from llm_sim.evaluate import (
    EvalConfig,
    aggregate,
    baseline_records,
    eval_inputs,
    evaluate_run,
)
from llm_sim.finetune import FinetuneConfig, finetune
from llm_sim.model import ModelConfig, build_model
from llm_sim.positions import PositionScheme
from llm_sim.training import LLMTrainConfig, read_splits, train_run
from qhybrid.errors import QHybridError
from quantum import GroverProblem, build_tokenizer
from quantum.dataset import DatasetSpec, SplitSpec, generate_dataset
from quantum.render import parse_compact

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
DATA = DatasetSpec(
    oracle_styles=("x_mcz_x", "diagonal"),
    train=SplitSpec(2, 5, 1, 4, 64, off_optimal=0.3),
    test_id=SplitSpec(2, 5, 1, 4, 6),
    test_ood_n=SplitSpec(7, 12, 1, 2, 6, off_optimal=0.5),
    test_ood_t=SplitSpec(5, 5, 5, 6, 3),
    test_ood_k=SplitSpec(2, 5, 1, 2, 4, off_optimal=1.0),
)
CONFIG = LLMTrainConfig(data=DATA, model=TINY, steps=4, batch_size=16, seeds=(0, 1), device="cpu")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    return out, train_run(CONFIG, out, progress=False)


def test_training_saves_checkpoints_and_a_loadable_model(trained_run):
    from transformers import AutoModelForCausalLM

    out, trained = trained_run
    assert [t.result.step for t in trained] == [4, 4]
    assert (out / "checkpoints-seed0" / "latest").is_file()
    splits = read_splits(out / "splits.json")
    assert len(splits["train"]) == 64 and {p.oracle_style for p in splits["train"]} == {
        "x_mcz_x",
        "diagonal",
    }
    t = trained[0]
    loaded = AutoModelForCausalLM.from_pretrained(t.path)
    ids = torch.tensor([t.tokenizer.encode("qubits 3 h repeat 2 oracle", add_special_tokens=False)])
    t.model.eval()
    torch.testing.assert_close(loaded(ids).logits, t.model.cpu()(ids).logits)
    p0, p1 = next(trained[0].model.parameters()), next(trained[1].model.parameters())
    assert not torch.equal(p0.cpu(), p1.cpu())  # different seeds, different models


def test_resumed_training_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Killed after step 3 (checkpoint at 2), resumed: the same weights, random positions included."""
    cfg = replace(CONFIG, seeds=(0,), steps=5, checkpoint_every=2)
    whole = train_run(cfg, tmp_path / "whole", progress=False)[0].model
    real_train = training.train

    def dying(*args, **kwargs):
        def on_step(step, loss):
            if step == 3:
                raise KeyboardInterrupt

        return real_train(*args, **kwargs, on_step=on_step)

    monkeypatch.setattr(training, "train", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut" / "model-seed0").exists()
    monkeypatch.setattr(training, "train", real_train)
    (resumed,) = train_run(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed.result.step == 5
    for a, b in zip(whole.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0)
    # resuming a finished run trains nothing and loads the saved model
    (again,) = train_run(cfg, tmp_path / "cut", resume=True, progress=False)
    assert again.result is None


def test_same_config_seed_and_threads_give_bit_identical_weights_and_outputs(tmp_path):
    """Training is a function of (config, seed, thread count); so is greedy evaluation."""
    from llm_sim.evaluate import evaluate_model

    cfg = replace(CONFIG, seeds=(0,), steps=6, task=TaskFormat(fmt="compact_scaled"))
    runs = [train_run(cfg, tmp_path / name, progress=False)[0] for name in ("a", "b")]
    files = [(r.path / "model.safetensors").read_bytes() for r in runs]
    assert files[0] == files[1]
    problems = [GroverProblem(n, ["0" * (n - 1) + "1"], k) for n, k in ((4, 1), (9, 3), (15, 0))]
    outputs = [evaluate_model(r.model, r.tokenizer, cfg.task, problems) for r in runs]
    assert [o["text"] for o in outputs[0]] == [o["text"] for o in outputs[1]]


def test_evaluate_run_writes_tables_curves_and_plot(trained_run, tmp_path):
    out, _ = trained_run
    cfg = EvalConfig(run=str(out), bootstrap=20, max_per_split=4, device="cpu")
    res = evaluate_run(cfg, tmp_path)
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "eval.md").is_file()
    assert (tmp_path / "eval_vs_n.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "eval.json").read_text())
    tables = saved["tables"]
    assert set(tables) == {"test_id", "test_ood_n", "test_ood_t", "test_ood_k"}
    row = tables["test_id"]["all"]["ceiling"][0]
    assert row["set_acc"] == 1.0 and row["tvd_raw"] < 1e-4  # parser + closed form is exact
    assert all(r["seeds"] == 2 for r in tables["test_ood_n"]["n"]["model"])
    assert "untrained" in tables["test_id"]["all"]
    assert {"optimal", "non-optimal"} == set(saved["curves"]["model"])
    assert res["seeds"] == ["model-seed0", "model-seed1"]


def test_evaluate_on_anchor_records(trained_run, tmp_path):
    from llm_sim.anchor import export_anchor

    out, _ = trained_run
    export_anchor([GroverProblem(3, ["101"]), GroverProblem(9, ["011011011"])], tmp_path / "a.json")
    cfg = EvalConfig(
        run=str(out),
        splits=("test_id",),
        anchor=str(tmp_path / "a.json"),
        bootstrap=0,
        untrained=False,
        device="cpu",
    )
    res = evaluate_run(cfg, tmp_path / "eval")
    assert [r["n"] for r in res["tables"]["anchor"]["n"]["ceiling"]] == [3, 9]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"run": ""}, "no finished model-seed"),
        ({"splits": ("test_nothing",)}, "none of splits"),
        ({"anchor": "/nonexistent/anchor.json"}, "does not exist"),
    ],
)
def test_eval_inputs_are_checked_before_anything_is_written(trained_run, change, match):
    out, _ = trained_run
    with pytest.raises(QHybridError, match=match):
        eval_inputs(replace(EvalConfig(run=str(out)), **change))


def test_aggregate_mean_over_seeds_and_interval():
    seed_a = [{"n": 3, "set_acc": 1.0}, {"n": 3, "set_acc": 0.0}]
    seed_b = [{"n": 3, "set_acc": 1.0}, {"n": 3, "set_acc": 1.0}]
    (row,) = aggregate([seed_a, seed_b], "n", metrics=("set_acc",), n_boot=400)
    assert row["set_acc"] == pytest.approx(0.75)  # mean of the per-seed means 0.5 and 1.0
    assert 0.0 <= row["set_acc_lo"] <= 0.75 <= row["set_acc_hi"] <= 1.0
    assert row["seeds"] == 2 and row["problems"] == 2


def test_shortcut_baseline_fails_exactly_where_k_is_not_optimal():
    p_opt, p_k0 = GroverProblem(3, ["101"]), GroverProblem(3, ["101"], 0)
    recs = baseline_records([p_opt, p_k0])
    # p = 1 on 101; truth 121/128 (k*=2) and 1/8 (k=0)
    assert recs["oracle_1/t"][0]["p_marked_err"] == pytest.approx(7 / 128)
    assert recs["oracle_1/t"][1]["p_marked_err"] == pytest.approx(7 / 8)
    assert recs["ceiling"][1]["p_marked_err"] == pytest.approx(0.0, abs=1e-12)
    assert recs["uniform"][1]["tvd"] == pytest.approx(0.0, abs=1e-12)
    p = GroverProblem(12, ["0" * 12, "1" * 12], 5, "phase_oracle")
    assert parse_compact(prompt_text(p)) == p
    assert parse_compact(prompt_text(p, "compact_scaled")) == p


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": ()}, "seeds=\\[\\]"),
        ({"seeds": (1, 1)}, "distinct"),
        ({"steps": 0}, "steps=0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(QHybridError, match=match):
        LLMTrainConfig(**kwargs)


def test_training_reads_a_generated_dataset_folder(tmp_path):
    spec = replace(DATA, renderings=("compact",), parquet=False, aer_check_per_split=0)
    generate_dataset(spec, tmp_path / "ds")
    cfg = replace(CONFIG, dataset=str(tmp_path / "ds"), seeds=(0,), steps=1)
    splits = training.load_splits(cfg)
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 64,
        "test_id": 6,
        "test_ood_n": 6,
        "test_ood_t": 3,
        "test_ood_k": 4,
    }
    assert splits == training.load_splits(replace(cfg, dataset=""))  # the same draw as in memory
    with pytest.raises(QHybridError, match="no data/train"):
        training.load_splits(replace(cfg, dataset=str(tmp_path / "missing")))
    (tmp_path / "ds" / "data" / "train" / "shard-00000.jsonl").write_text("{not json\n")
    with pytest.raises(QHybridError, match="shard-00000.jsonl:1 is not"):
        training.load_splits(cfg)


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A tiny 'pretrained' Llama saved the way a hub checkpoint is (with a tokenizer for QASM3)."""
    path = tmp_path_factory.mktemp("base")
    tok = build_tokenizer()
    torch.manual_seed(0)
    build_model(TINY, tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_from_local_folder(tiny_pretrained, tmp_path, method):
    from transformers import AutoModelForCausalLM

    small = DatasetSpec(
        train=SplitSpec(3, 4, 1, 1, 8),
        test_id=SplitSpec(3, 3, 1, 1, 2),
        test_ood_n=SplitSpec(4, 4, 1, 1, 2),
        test_ood_t=SplitSpec(4, 4, 4, 4, 1),
        test_ood_k=SplitSpec(3, 3, 1, 1, 2, off_optimal=1.0),
    )
    task = TaskFormat(fmt="qasm3", answer="dict", positions=PositionScheme("sequential"))
    cfg = FinetuneConfig(
        base=str(tiny_pretrained),
        method=method,
        task=task,
        data=small,
        steps=2,
        batch_size=4,
        lr=1e-2,
        lora_r=2,
        device="cpu",
    )
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
    assert len(read_splits(tmp_path / "splits.json")["train"]) == 8


def test_finetune_needs_a_local_folder(tmp_path):
    with pytest.raises(QHybridError, match="nothing is downloaded"):
        finetune(FinetuneConfig(base=str(tmp_path / "missing")), tmp_path)


SETS = [
    "steps=2",
    "seeds=[0]",
    "batch_size=8",
    "device='cpu'",
    "data.train.count=16",
    "data.test_id.count=3",
    "data.test_ood_n.count=2",
    "data.test_ood_n.n_max=8",
    "data.test_ood_t.count=1",
    "data.test_ood_k.count=2",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.arch='mixtral'",
]


def test_cli_train_resume_and_eval(tmp_path, capsys):
    from qhybrid.cli import main

    sets = [a for s in SETS for a in ("--set", s)]
    assert main(["llm", "train", "--out", str(tmp_path), *sets]) == 0
    run = next(tmp_path.glob("llm-train-*"))
    assert (run / "model-seed0" / "task.json").is_file()
    assert main(["llm", "train", "--resume", str(run)]) == 0
    assert "finished before the resume" in capsys.readouterr().out
    assert main(["llm", "train", "--resume", str(run), "--set", "steps=3"]) == 2
    assert "drop --config/--set" in capsys.readouterr().err
    assert main(["llm", "train", "--resume", str(tmp_path / "nope")]) == 2
    args = [
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
    assert main(args) == 0
    assert "set_acc" in capsys.readouterr().out


def test_cli_refuses_bad_input_before_creating_a_run_folder(tmp_path, capsys):
    from qhybrid.cli import main

    out = tmp_path / "runs"
    bad = [["--set", "seeds=[]"], ["--set", f"dataset='{tmp_path / 'missing'}'"]]
    for extra in bad:
        assert main(["llm", "train", "--out", str(out), *extra]) == 2
    assert main(["llm", "eval", "--out", str(out), "--set", f"run='{tmp_path}'"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_cli_exports_anchor_records(tmp_path, capsys):
    from llm_sim.anchor import import_anchor
    from qhybrid.cli import main

    path = tmp_path / "a.json"
    assert main(["llm", "export-anchor", "--set", f"path='{path}'", "--set", "input='oracle'"]) == 0
    assert "anchor records" in capsys.readouterr().out
    problems = import_anchor(path)
    assert problems and all(p.oracle_style == "x_mcz_x" for p in problems)
    assert main(["llm", "export-anchor", "--set", "split='train2'"]) == 2
