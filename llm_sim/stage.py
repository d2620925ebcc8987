"""Reproduce stage ``llm``: a GroverGPT-style MoE model trained on the quantum stage's dataset.

A Mixtral-style model (top-2 of 4 experts) is trained from scratch on the ``train`` split of the
dataset the ``quantum`` stage generated (n <= 6; when that stage did not run, the same splits are
drawn here and the report says so), with the toolkit's default task (:class:`~llm_sim.data.TaskFormat`:
``compact_scaled`` prompts, coupled position ids, ``marked_phase`` answers), through
:func:`qhybrid.train.train`. It is scored on every test split beside the p = 1/t rule and the parser +
closed-form ceiling, and the report leads with what a distribution is judged by: TVD and SA@0.3
at the qubit counts it never saw, and the error of its number at a non-optimal k; naming and
ranking the marked set follow.

The stage reads top to bottom: :func:`run_stage` = splits -> train -> evaluate -> summarise ->
report -> hand over. ``context["llm"]`` gets ``moe_model`` (a ``save_pretrained`` folder of the
trained ``MixtralForCausalLM``), ``eval_fn(model) -> {metric: value}`` (greedy decoding on the
test_id problems) and ``calibration`` (unpacked ``{"input_ids", "attention_mask", "position_ids"}``
batches of training sequences for routing statistics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt

from llm_sim.data import TaskFormat, collate, encode_example
from llm_sim.evaluate import (
    baseline_records,
    build_tables,
    curve_rows,
    display_rows,
    evaluate_model,
    plot_vs_n,
)
from llm_sim.model import ModelConfig
from llm_sim.training import (
    DATA,
    LLMTrainConfig,
    TrainedModel,
    load_splits,
    train_model,
    write_splits,
)
from qhybrid.config import check_fields
from qhybrid.report import Section
from qhybrid.runs import Run, atomic_write_json

TITLE = "LLM simulator: a GroverGPT-style MoE model, trained on n <= 6"
SPLITS = ("test_id", "test_ood_n", "test_ood_t", "test_ood_k")
Records = dict[str, list[list[dict[str, Any]]]]


@dataclass(frozen=True)
class StageConfig:
    steps: Annotated[int, Ge(1)] = 1000  # optimizer steps
    batch_size: Annotated[int, Ge(1)] = 32  # sequences per step
    lr: Annotated[float, Gt(0)] = 3e-3  # AdamW peak learning rate
    hidden_size: Annotated[int, Ge(8)] = 64  # model width
    num_layers: Annotated[int, Ge(1)] = 2  # decoder blocks
    num_experts: Annotated[int, Ge(2)] = 4  # experts per layer (top-2 routing)
    max_test: Annotated[int, Ge(1)] = 280  # problems scored per test split (280: all of test_ood_n)

    def __post_init__(self) -> None:
        check_fields(self)


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    """Train, score and report the stage's model; hand it to the moe stage (see the module doc)."""
    splits, source = _splits(context, seed)
    trained, train_s = _train(run, config, splits, seed)
    tests = [(s, p) for s in SPLITS for p in splits.get(s, [])[: config.max_test]]
    label = f"MoE ({trained.n_params / 1e3:.0f}K)"
    per_model = _evaluate(trained, tests, label)
    section = _report(run, config, per_model, label, splits, source, (trained.n_params, train_s))
    context["llm"] = _handoff(trained, splits, config)
    return section


def _splits(context: dict[str, Any], seed: int) -> tuple[dict[str, list[Any]], str]:
    """The quantum stage's dataset, or the same splits drawn here (n <= 20 for time)."""
    folder = context.get("quantum", {}).get("dataset")
    if folder:
        return load_splits(
            LLMTrainConfig(dataset=folder)
        ), f"the quantum stage's dataset ({folder})"
    spec = replace(DATA, seed=seed, test_ood_n=replace(DATA.test_ood_n, n_max=20, count=280))
    return load_splits(
        LLMTrainConfig(data=spec)
    ), "splits drawn here (the quantum stage did not run)"


def _train(
    run: Run, config: StageConfig, splits: dict[str, list[Any]], seed: int
) -> tuple[TrainedModel, float]:
    """The MoE model trained on ``splits["train"]`` on the CPU; its folder is in the run."""
    model = ModelConfig(
        arch="mixtral",
        hidden_size=config.hidden_size,
        num_heads=4,
        num_layers=config.num_layers,
        intermediate_size=4 * config.hidden_size,
        num_experts=config.num_experts,
    )
    cfg = LLMTrainConfig(
        seeds=(seed,),
        model=model,
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        device="cpu",
    )
    out = run.artefact("llm", "model")
    write_splits(out / "splits.json", splits)
    t0 = time.perf_counter()
    trained = train_model(cfg, out, seed=seed, splits=splits, progress=True)
    return trained, time.perf_counter() - t0


def _evaluate(trained: TrainedModel, tests: list[tuple[str, Any]], label: str) -> Records:
    """Per-problem records of the model and of the baselines, tagged with their split."""
    problems = [p for _, p in tests]

    def tag(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "split": s} for (s, _), r in zip(tests, recs, strict=True)]

    task = TaskFormat()
    per_model = {label: [tag(evaluate_model(trained.model, trained.tokenizer, task, problems))]}
    for name, recs in baseline_records(problems).items():
        per_model[name] = [tag(recs)]
    return per_model


def summarise(per_model: Records, label: str, trained_max_n: int) -> dict[str, Any]:
    """The headline at unseen n: TVD and SA@0.3 (optimal k) beside the rule and the ceiling, the
    number's error at a non-optimal k beside the rule, then naming and ranking the set.

    ``tvd_excess`` is the largest (model TVD - rule TVD) over the unseen n; ``sa_deficit`` the
    largest (ceiling SA@0.3 - model SA@0.3); both per n, over the problems at that n.
    """

    def curve(name: str, regime: str) -> dict[int, dict[str, Any]]:
        rows = curve_rows(per_model[name], regime, n_boot=0)
        return {r["n"]: r for r in rows if r["n"] > trained_max_n}

    opt, rule, ceil = (curve(m, "optimal") for m in (label, "oracle_1/t", "ceiling"))
    non, rule_non = curve(label, "non-optimal"), curve("oracle_1/t", "non-optimal")
    if not opt:
        return {}
    ns = sorted(opt)
    worst = max(ns, key=lambda n: opt[n]["tvd_raw"] - rule[n]["tvd_raw"])
    return {
        "n": (ns[0], ns[-1]),
        "tvd": max(opt[n]["tvd_raw"] for n in ns),
        "tvd_rule": max(rule[n]["tvd_raw"] for n in ns),
        "tvd_excess": opt[worst]["tvd_raw"] - rule[worst]["tvd_raw"],
        "tvd_excess_n": worst,
        "sa_deficit": max(ceil[n]["sa_0.3"] - opt[n]["sa_0.3"] for n in ns),
        "p_err": max((non[n]["p_marked_err"] for n in non), default=float("nan")),
        "p_err_rule": max((rule_non[n]["p_marked_err"] for n in rule_non), default=float("nan")),
        "named_set": min(opt[n]["named_set"] for n in ns),
        "set_acc": min(opt[n]["set_acc"] for n in ns),
    }


def _headline(summary: dict[str, Any], n_params: int, train_s: float) -> str:
    if not summary:
        return f"{n_params:,} parameters trained in {train_s:.0f} s"
    s = summary
    return (
        f"{n_params:,} parameters trained in {train_s:.0f} s; at unseen n = {s['n'][0]}–{s['n'][1]} "
        f"(optimal k): TVD ≤ {s['tvd']:.3f} (rule {s['tvd_rule']:.3f}; worst excess "
        f"{s['tvd_excess']:+.3f} at n = {s['tvd_excess_n']}), SA@0.3 at most {s['sa_deficit']:.2f} "
        f"below the ceiling; |p̂ − p| at a non-optimal k ≤ {s['p_err']:.3f} (rule "
        f"{s['p_err_rule']:.3f}); named set ≥ {s['named_set']:.2f}, set accuracy ≥ {s['set_acc']:.2f}"
    )


def _report(
    run: Run,
    config: StageConfig,
    per_model: Records,
    label: str,
    splits: dict[str, list[Any]],
    source: str,
    cost: tuple[int, float],
) -> Section:
    """The section: the headline, the training row, one table per split, the figure against n."""
    (n_params, train_s), train_n = cost, sorted({p.n_qubits for p in splits["train"]})
    summary = summarise(per_model, label, max(train_n))
    tables = build_tables(per_model, SPLITS, n_boot=200)
    atomic_write_json(run.artefact("llm", "eval.json"), {"tables": tables, "summary": summary})
    figure = run.save_figure(plot_vs_n(per_model, train_n, n_boot=100), "figures/llm_eval_vs_n")
    section = Section(
        TITLE,
        text=(
            f"Trained on {source}: {len(splits['train'])} problems with n = {min(train_n)}–"
            f"{max(train_n)}, t up to {max(p.n_marked for p in splits['train'])}, four oracle "
            f"styles, part of them at a non-optimal k; {config.steps} steps in {train_s:.0f} s on "
            "the CPU. Prompts write k on the scale of the rotation (compact_scaled), answers name "
            "the marked states, the rotation and the success probability (marked_phase), decoded "
            "greedily with coupled position ids and scored over the full 2^n support. "
            + _headline(summary, n_params, train_s).split("; ", 1)[-1]
            + ". Single seed: the three-seed targets are in docs/llm_sim.md."
        ),
    )
    section.headline = _headline(summary, n_params, train_s)
    section.add_table(
        "Training",
        [{"model": label, "steps": config.steps, "seconds": round(train_s, 1)}],
    )
    for split, by in (
        ("test_ood_n", "n"),
        ("test_id", "all"),
        ("test_ood_k", "all"),
        ("test_ood_t", "all"),
    ):
        rows = [
            r for name, rows_ in tables[split][by].items() for r in display_rows(rows_, by, name)
        ]
        if rows:
            section.add_table(f"{split} by {by} (mean [bootstrap 95% CI])", rows)
    section.add_figure("Against n (grey: trained n): the model beside the baselines", figure)
    return section


def _handoff(
    trained: TrainedModel, splits: dict[str, list[Any]], config: StageConfig
) -> dict[str, Any]:
    """What the moe stage needs: the model folder, calibration batches and an evaluation."""
    task = TaskFormat()
    calib_ex = [encode_example(p, trained.tokenizer, task) for p in splits["train"][:128]]
    pad = trained.tokenizer.pad_token_id
    calibration = [
        {
            k: v
            for k, v in collate(calib_ex[i : i + 32], pad, task.positions).items()
            if k != "labels"
        }
        for i in range(0, len(calib_ex), 32)
    ]
    test_id = splits["test_id"][: config.max_test]
    return {
        "moe_model": str(trained.path),
        "tokenizer": str(trained.path),
        "eval_fn": _eval_fn(trained.tokenizer, task, test_id),
        "calibration": calibration,
        "test_id": test_id,
        "task": task,
    }


def _eval_fn(tokenizer: Any, task: TaskFormat, problems: list[Any]) -> Callable[[Any], dict]:
    def eval_fn(model: Any) -> dict[str, float]:
        """Mean metrics of ``model`` (same tokenizer and task) on the test_id problems."""
        with torch.no_grad():
            recs = evaluate_model(model, tokenizer, task, problems)
        keys = ("set_acc", "tvd_raw", "p_marked_err", "parsed")
        return {m: sum(r[m] for r in recs) / len(recs) for m in keys}

    return eval_fn
