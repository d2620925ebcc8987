"""Reproduce stage ``llm``: a small dense and a small MoE model trained on Grover problems, evaluated.

Both models are trained from scratch on the compact quantum-native format (n = 3–6, t = 1–3, 30% of
the problems with a non-optimal k) through :func:`qhybrid.train.train`, then scored on every test
split beside the uniform, p = 1/t shortcut and parser + closed-form ceiling baselines. The quick
preset is a pipeline check sized for a couple of CPU minutes, far from the accuracy targets (see
docs/llm_sim.md for the measured targets and their budgets).

Hands to later stages ``context["llm"]``: ``moe_model`` (a ``save_pretrained`` folder of the trained
``MixtralForCausalLM``), ``dense_model``, ``eval_fn(model) -> {metric: value}`` (greedy decoding on the
test_id problems), and ``calibration`` (a list of ``{"input_ids", "attention_mask"}`` batches of
training prompts for routing statistics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from llm_sim.data import SplitSpec, TaskFormat, collate, encode_all
from llm_sim.evaluate import baseline_records, build_tables, display_rows, evaluate_model, plot_vs_n
from llm_sim.model import ModelConfig, build_model
from llm_sim.training import LLMTrainConfig, train_model
from qhybrid.report import Section
from qhybrid.runs import Run, atomic_write_json

TITLE = "LLM simulator: GroverGPT-style dense and MoE models"


@dataclass(frozen=True)
class StageConfig:
    steps: int = 1000  # optimizer steps per model (45 s dense, 70 s MoE on 2 cores)
    batch_size: int = 32  # sequences per step
    lr: float = 3e-3  # AdamW peak learning rate
    hidden_size: int = 64  # width of both models
    num_layers: int = 2  # decoder blocks of both models
    num_experts: int = 4  # MoE experts per layer (top-2 routing)
    train_size: int = 2000  # training problems (n = 3-6)
    test_size: int = 24  # problems per test split
    ood_n: tuple[int, ...] = (7, 8, 10, 12)  # qubit counts of the extrapolation split


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    base = ModelConfig(hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=4,
                       intermediate_size=3 * config.hidden_size, num_experts=config.num_experts)  # fmt: skip
    spec = SplitSpec(
        train_size=config.train_size, test_size=config.test_size, ood_n=config.ood_n, seed=seed
    )
    cfg = LLMTrainConfig(splits=spec, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                         seeds=(seed,), device="cpu")  # fmt: skip
    from llm_sim.training import load_splits

    splits = load_splits(cfg)
    task = TaskFormat()
    trained = {}
    for label, arch in (("dense", "llama"), ("moe", "mixtral")):
        t0 = time.perf_counter()
        trained[label] = train_model(replace(cfg, model=replace(base, arch=arch)), run.artefact("llm", label),
                                     seed=seed, splits=splits, progress=False)  # fmt: skip
        trained[label].result.wall_time_s = time.perf_counter() - t0
    tests = [
        (s, p) for s in ("test_id", "test_ood_n", "test_ood_t", "test_ood_k") for p in splits[s]
    ]
    problems = [p for _, p in tests]
    per_model: dict[str, list[list[dict[str, Any]]]] = {}
    for label, tm in trained.items():
        recs = evaluate_model(tm.model, tm.tokenizer, task, problems)
        per_model[f"{label} ({tm.n_params / 1e3:.0f}K)"] = [
            [{**r, "split": s} for (s, _), r in zip(tests, recs, strict=True)]
        ]
    torch.manual_seed(seed)
    dense = trained["dense"]
    untrained = build_model(replace(base, arch="llama"), dense.tokenizer)
    recs = evaluate_model(untrained, dense.tokenizer, task, problems)
    per_model["untrained dense"] = [
        [{**r, "split": s} for (s, _), r in zip(tests, recs, strict=True)]
    ]
    for label, recs in baseline_records(problems, task).items():
        per_model[label] = [[{**r, "split": s} for (s, _), r in zip(tests, recs, strict=True)]]
    tables = build_tables(
        per_model, ["test_id", "test_ood_n", "test_ood_t", "test_ood_k"], n_boot=200
    )
    atomic_write_json(run.artefact("llm", "eval.json"), tables)
    fig = plot_vs_n(
        {k: v for k, v in per_model.items() if k != "ceiling"}, spec.train_n, n_boot=100
    )
    figure = run.save_figure(fig, "figures/llm_eval_vs_n")

    section = Section(
        TITLE,
        text=(
            f"Dense Llama and Mixtral MoE ({config.num_experts} experts, top-2) trained from scratch for "
            f"{config.steps} steps each on {len(splits['train'])} problems (n = 3–6) in the compact "
            "quantum-native format; greedy decoding; answers parsed and scored over the full 2^n support. "
            "Single seed and a couple of CPU minutes: a pipeline check, not the targets "
            "(docs/llm_sim.md has those)."
        ),
    )
    section.add_table("Training", [
        {"model": label, "parameters": tm.n_params, "steps": tm.result.step, "final loss": tm.result.loss,
         "seconds": tm.result.wall_time_s} for label, tm in trained.items()
    ])  # fmt: skip
    for split, by in (
        ("test_id", "all"),
        ("test_ood_k", "all"),
        ("test_ood_t", "all"),
        ("test_ood_n", "n"),
    ):
        rows = [
            r
            for label, model_rows in tables[split][by].items()
            for r in display_rows(model_rows, by, label)
        ]
        section.add_table(f"{split} (mean [bootstrap 95% CI])", rows)
    section.add_figure("Set accuracy and TVD against n; grey = training range", figure)

    moe = trained["moe"]
    calib = [collate([{"input_ids": e["input_ids"], "labels": e["input_ids"]} for e in encode_all(
        splits["train"][i : i + 32], moe.tokenizer, task)], moe.tokenizer.pad_token_id) for i in range(0, min(128, len(splits["train"])), 32)]  # fmt: skip
    calibration = [
        {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in calib
    ]
    test_id = splits["test_id"]

    def eval_fn(model: Any) -> dict[str, float]:
        """Mean metrics of ``model`` (same tokenizer) on the test_id problems."""
        with torch.no_grad():
            recs = evaluate_model(model, moe.tokenizer, task, test_id)
        return {
            m: sum(r[m] for r in recs) / len(recs)
            for m in ("set_acc", "tvd", "p_marked_err", "parsed")
        }

    context["llm"] = {
        "moe_model": str(moe.path),
        "dense_model": str(trained["dense"].path),
        "tokenizer": str(moe.path),
        "eval_fn": eval_fn,
        "calibration": calibration,
        "test_id": test_id,
    }
    return section
