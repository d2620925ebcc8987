"""Reproduce stage ``moe``: compress a trained Mixtral-style model and measure what each pass costs.

Trains the subject of :mod:`moe.subject` (a ``MixtralForCausalLM`` with 8 experts per layer on the
multi-domain token task) through :func:`qhybrid.train.train`, then runs merging, dropping, compression
and mixed-precision quantisation on copies of it and reports expert parameters and bytes, active MoE
FLOPs per token, pass wall time, next-token accuracy, perplexity and retention, a retention-vs-size plot
and an exact save/load round trip of a non-uniform compressed model.

A short run of the standard-library byte subject (``stdlib_steps``) adds merging, dropping and packed
quantisation on real text with its per-domain routing entropy (the full tables are benchmarks).

When the llm stage ran first, its Grover MoE model (``context["llm"]``) is merged and dropped too, and
the retention of its Grover metrics (set accuracy, TVD on test_id) is reported.

:func:`run_stage` reads top to bottom: the subjects (:meth:`StageConfig.subjects`), the methods
(:func:`methods`, :func:`run_methods`), the round trips (:func:`roundtrip`, :func:`_disk_row`),
:func:`plot`, :func:`judge`, then the extra tables.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from annotated_types import Interval

from moe.values import (
    DEFAULT_MAX_CPU_S,
    DOCS,
    Count,
    CpuSeconds,
    KeepRatio,
    NonNegativeCount,
    Sequences,
    forward_seconds,
)
from qhybrid.config import check_fields, check_work
from qhybrid.report import Section
from qhybrid.runs import Run

logger = logging.getLogger(__name__)

TITLE = "MoE: merging, dropping, compression and quantisation of experts"


@dataclass(frozen=True)
class StageConfig:
    """The stage's settings (the subject's are checked by :class:`moe.subject.SubjectConfig`)."""

    train_steps: Count = 250  # AdamW steps for the subject model (quick preset)
    train_sequences: Sequences = 2048  # training sequences of the multi-domain task
    test_sequences: Sequences = 256  # held-out sequences for accuracy / perplexity
    calib_sequences: Count = 128  # calibration sequences for routing statistics
    distill_steps: NonNegativeCount = 60  # recovery distillation steps after merge + prune
    keep_ratio: KeepRatio = 0.5625  # expert neurons kept (72 of 128)
    avg_bits: Annotated[float, Interval(ge=2, le=8)] = 3.0  # average expert bits, mixed precision
    stdlib_steps: NonNegativeCount = 100  # steps of the standard-library subject; 0 = skip
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse a stage estimated above (CPU-core s)

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        subject, stdlib = self.subjects()
        seconds = subject.work()[0] + (stdlib.work()[0] if stdlib else 0.0)
        # every method: statistics, the pass, evaluation and generation on the held-out set
        tokens = (self.calib_sequences * 4 + self.test_sequences * 3) * subject.seq_len
        seconds += len(METHOD_NAMES) * forward_seconds(subject.active_parameters(), tokens)
        seconds += forward_seconds(
            subject.active_parameters(), 2 * self.distill_steps * 16 * subject.seq_len, train=True
        )
        check_work(
            seconds,
            self.max_cpu_s,
            what="the moe stage",
            drivers=f"train_steps={self.train_steps}, stdlib_steps={self.stdlib_steps}, "
            f"{len(METHOD_NAMES) + 5} compression methods on calib_sequences="
            f"{self.calib_sequences} and test_sequences={self.test_sequences}",
            key="moe.max_cpu_s",
            docs=DOCS,
        )

    def subjects(self) -> tuple[Any, Any]:
        """The token subject's and (``stdlib_steps`` > 0) the standard-library subject's configs."""
        from moe.subject import SubjectConfig

        subject = SubjectConfig(
            steps=self.train_steps,
            train_sequences=self.train_sequences,
            test_sequences=self.test_sequences,
        )
        stdlib = None
        if self.stdlib_steps:
            stdlib = SubjectConfig(
                task="stdlib",
                seq_len=64,
                steps=self.stdlib_steps,
                train_sequences=2048,
                test_sequences=256,
            )
        return subject, stdlib


# the methods of moe.experiment.METHODS the stage runs (configured ones are added by methods())
METHOD_NAMES = (
    "baseline",
    "merge 8->4 + LS refit",
    "merge 8->4 MC-SMoE port (no refit)",
    "merge 8->4 random groups + LS refit",
    "merge 8->4 random groups (no refit)",
    "merge 8->4 no alignment + LS refit",
    "drop 8->4 frequency",
    "drop 25% one-shot (exact)",
    "drop 50% iterative (saliency)",
)


def methods(config: StageConfig) -> dict[str, Any]:
    """The compression methods, in the table's order."""
    from moe import experiment as ex

    out = {name: ex.METHODS[name] for name in METHOD_NAMES}
    steps = config.distill_steps
    out[f"merge 8->4 + LS refit + prune to {config.keep_ratio:.0%} neurons + {steps} KD steps"] = (
        ex.merge_compress(4, config.keep_ratio, steps=steps)
    )
    for alloc in ("sensitivity", "frequency", "uniform"):
        out[f"quant {config.avg_bits} bits {alloc} (packed)"] = ex.quantize(config.avg_bits, alloc)
    out[f"quant {config.avg_bits} bits uniform (fake quant, fp32 storage)"] = ex.quantize(
        config.avg_bits, "uniform", storage="fake"
    )
    out["merge 8->4 global budget + LS refit"] = ex.METHODS["merge 8->4 global budget + LS refit"]
    return out


def run_methods(
    run: Run, model: Any, ctx: Any, chosen: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each method on a copy of the subject: the table's rows and the compressed models."""
    from moe import experiment as ex

    rows: list[dict[str, Any]] = []
    base_metrics = None
    models = {}
    for name, fn in chosen.items():
        row, compressed = ex.run_method(name, model, ctx, fn, base_metrics)
        if base_metrics is None:
            base_metrics = {"accuracy": row["accuracy"], "perplexity": row["perplexity"]}
            row.update(retention=1.0, **{"ppl increase": 0.0})
        rows.append(row)
        models[name] = compressed
        run.log_metrics({"moe_method": name, **{k: v for k, v in row.items() if k != "method"}})
    return rows, models


def roundtrip(run: Run, model: Any, ctx: Any, x: torch.Tensor) -> tuple[list[int], float]:
    """An exact save/load round trip of a model with non-uniform per-layer counts: the counts
    and the largest |Δlogits| after reloading."""
    from moe import experiment as ex
    from moe.checkpoint import load_compressed, save_compressed
    from moe.drop import drop_experts
    from moe.layers import find_moe_layers

    nonuniform = copy.deepcopy(model)
    drop_experts(
        nonuniform, ctx.stats(nonuniform), num_experts=5, criterion="saliency", budget="global"
    )
    ex.merge(3)(nonuniform, ctx)
    counts = [layer.num_experts for layer in find_moe_layers(nonuniform)]
    again = load_compressed(save_compressed(nonuniform, run.artefact("moe", "compressed_model")))
    with torch.no_grad():
        diff = float((again(input_ids=x).logits - nonuniform(input_ids=x).logits).abs().max())
    return counts, diff


def plot(run: Run, rows: list[dict[str, Any]]) -> Any:
    """Retention against expert bytes, one legend entry per method beside the axes (labels on the
    points overprint each other); the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    markers = "osD^vP*Xh<>p"
    for i, r in enumerate(rows):
        marker = markers[i % len(markers)]
        ax.scatter(r["expert MB"], r["retention"], s=36, marker=marker, label=r["method"])
    ax.set(xlabel="expert weights (MB, log scale)", ylabel="accuracy retention", xscale="log")
    ax.set_title("Retention vs size of the expert weights")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return run.save_figure(fig, "figures/moe_retention_vs_size")


def judge(
    config: StageConfig,
    subject: Any,
    facts: dict[str, Any],
    rows: list[dict[str, Any]],
) -> tuple[str, str]:
    """The section's text and headline from the subject's facts, the round trips and the rows."""
    metrics, disk = facts["metrics"], facts["disk"]
    text = (
        f"Subject: MixtralForCausalLM, {subject.layers} layers, H={subject.hidden}, "
        f"I={subject.intermediate}, {subject.experts} experts top-{subject.top_k}, trained "
        f"{subject.steps} AdamW steps in {metrics['train_seconds']:.0f} s on a 4-domain synthetic "
        f"token task (test next-token accuracy {metrics['accuracy']:.3f}, perplexity "
        f"{metrics['perplexity']:.3f}; per domain "
        f"{', '.join(f'{k} {v:.2f}' for k, v in facts['per_domain'].items())}). "
        f"Retention = compressed accuracy / baseline accuracy on {subject.test_sequences} held-out "
        "sequences. 'pass seconds' includes collecting the routing statistics. 'LS refit on calib' "
        "marks our least-squares refit of merged down projections on calibration data (not part of "
        "MC-SMoE); 'distill steps' counts knowledge-distillation steps; 'expert MB' is measured from "
        "the expert tensors as held (fake quantisation keeps fp32 storage). Non-uniform save/load: "
        f"per-layer experts {facts['counts']}, max |Δlogits| after reload {facts['diff']:.1e}. "
        f"Packed {config.avg_bits}-bit experts (sensitivity allocation) saved and reloaded: expert "
        f"bytes on disk {disk['disk']:,} vs {disk['disk fp32']:,} fp32 "
        f"({disk['disk'] / disk['disk fp32']:.3f}x, read from the safetensors header), resident "
        f"{disk['resident']:,} bytes ({disk['resident'] / disk['disk fp32']:.3f}x), max |Δlogits| "
        f"after reload {disk['diff']:.1e}."
    )
    by_name = {r["method"]: r for r in rows}
    headline = (
        f"merge 8->4 + LS refit retention {by_name['merge 8->4 + LS refit']['retention']:.3f}; "
        f"packed {config.avg_bits}-bit experts on disk {disk['disk'] / disk['disk fp32']:.3f}x fp32"
    )
    return text, headline


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    """The stage: configure, train the subject, run the methods, round-trip, plot, tabulate and
    judge; the standard-library subject and the llm stage's model add their tables."""
    from moe import experiment as ex
    from moe.subject import per_domain, train_subject

    subject, _ = config.subjects()
    model, data, metrics = train_subject(
        subject, seed, metrics_path=run.artefact("moe", "train_metrics.jsonl")
    )
    ctx = ex.Context(
        data,
        model,
        seed=seed,
        calib_sequences=config.calib_sequences,
        distill_steps=config.distill_steps,
    )
    rows, models = run_methods(run, model, ctx, methods(config))
    x = data.test[:32]
    counts, diff = roundtrip(run, model, ctx, x)
    packed = models[f"quant {config.avg_bits} bits sensitivity (packed)"]
    disk = _disk_row(run, model, packed, x)
    figure = plot(run, rows)
    facts = {"metrics": metrics, "per_domain": per_domain(model, data), "counts": counts,
             "diff": diff, "disk": disk}  # fmt: skip
    text, headline = judge(config, subject, facts, rows)
    section = Section(TITLE, text=text)
    section.headline = headline
    section.add_table("Compression passes on the subject model", rows)
    if config.stdlib_steps:
        stdlib_rows, entropy = _stdlib_rows(config, seed)
        section.add_table(
            f"Standard-library byte subject ({config.stdlib_steps} AdamW steps; short, so its baseline "
            "is weak; the full 800-step, 3-seed tables are in docs/moe.md). Per-domain routing "
            "entropy / log 8: " + ", ".join(f"{k} {v:.2f}" for k, v in entropy.items()),
            stdlib_rows,
        )
        context.setdefault("moe_stdlib", {"rows": stdlib_rows, "routing_entropy": entropy})
    llm_rows = _llm_rows(context, ex, seed)
    if llm_rows:
        section.add_table(
            "Compression of the llm stage's Grover MoE model (test_id metrics, no retraining)",
            llm_rows,
        )
    section.add_figure("Accuracy retention against expert bytes", figure)
    context["moe"] = {"rows": rows, "roundtrip_max_diff": diff, "packed": disk}
    return section


def _disk_row(run: Run, fp32: Any, packed: Any, x: torch.Tensor) -> dict[str, Any]:
    """Save the fp32 and the packed model, reload the packed one; measured bytes and |Δlogits|."""
    from moe.checkpoint import load_compressed, save_compressed, tensor_bytes_on_disk
    from moe.layers import expert_bytes

    sizes = {}
    for name, m in (("fp32", fp32), ("packed", packed)):
        folder = save_compressed(m, run.artefact("moe", f"{name}_model"))
        sizes[name] = sum(v for k, v in tensor_bytes_on_disk(folder).items() if ".experts." in k)
    again = load_compressed(run.artefact("moe", "packed_model"))
    with torch.no_grad():
        diff = float((again(input_ids=x).logits - packed(input_ids=x).logits).abs().max())
    return {
        "disk": sizes["packed"],
        "disk fp32": sizes["fp32"],
        "resident": expert_bytes(again),
        "diff": diff,
    }


def _llm_rows(context: dict[str, Any], ex: Any, seed: int) -> list[dict[str, Any]]:
    """Merge and drop the llm stage's Grover MoE model; report retention of its Grover metrics.

    Uses ``context["llm"]``: ``moe_model`` (a ``save_pretrained`` folder), ``calibration`` (batches
    of training prompts for the routing statistics) and ``eval_fn(model)`` (set accuracy, TVD, ... on
    the test_id problems).
    """
    llm = context.get("llm")
    if not isinstance(llm, dict) or not llm.get("moe_model") or not llm.get("calibration"):
        return []
    from transformers import AutoModelForCausalLM

    from moe.drop import drop_experts
    from moe.layers import find_moe_layers
    from moe.merge import merge_experts
    from moe.stats import collect_routing_stats

    model = AutoModelForCausalLM.from_pretrained(llm["moe_model"]).float().eval()
    if not find_moe_layers(model, required=False):
        return []
    eval_fn = llm["eval_fn"]
    base = eval_fn(model)
    stats = collect_routing_stats(model, llm["calibration"])
    e = find_moe_layers(model)[0].num_experts
    rows = [{"pass": "baseline", "experts/layer": e, **base, "set_acc retention": 1.0}]
    for target in sorted({max(1, e // 2), max(1, (3 * e) // 4)}):
        for name, apply in (
            ("merge", lambda m, t: merge_experts(m, stats, num_experts=t)),
            (
                "drop (frequency)",
                lambda m, t: drop_experts(m, stats, num_experts=t, criterion="frequency"),
            ),
        ):
            m = copy.deepcopy(model)
            apply(m, target)
            metrics = eval_fn(m)
            rows.append(
                {
                    "pass": f"{name} {e}->{target}",
                    "experts/layer": target,
                    **metrics,
                    "set_acc retention": metrics["set_acc"] / base["set_acc"]
                    if base["set_acc"]
                    else None,
                }
            )
    return rows


def _stdlib_rows(config: StageConfig, seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A short run of the standard-library subject: merging (port vs LS refit vs random), dropping
    and packed 3-bit quantisation, with its per-domain routing entropy."""
    from moe import experiment as ex
    from moe.subject import routing_entropy, train_subject

    _, cfg = config.subjects()
    model, data, _ = train_subject(cfg, seed)
    ctx = ex.Context(data, model, seed=seed, calib_sequences=config.calib_sequences)
    names = (
        "baseline",
        "merge 8->4 + LS refit",
        "merge 8->4 MC-SMoE port (no refit)",
        "merge 8->4 random groups (no refit)",
        "drop 8->4 frequency",
        "quant 3.0 bits sensitivity (packed)",
    )
    rows: list[dict[str, Any]] = []
    for name in names:
        row, _ = ex.run_method(name, model, ctx, ex.METHODS[name], rows[0] if rows else None)
        rows.append(row)
    rows[0].update(retention=1.0)
    keep = (
        "method",
        "recipe",
        "LS refit on calib",
        "distill steps",
        "expert MB",
        "accuracy",
        "perplexity",
        "retention",
    )
    return [{k: r[k] for k in keep if k in r} for r in rows], routing_entropy(model, data)
