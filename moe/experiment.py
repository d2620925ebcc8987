"""Run compression passes on a copy of a subject model and measure size, cost, time and retention.

Shared by ``qhybrid moe``, the reproduce stage and ``benchmarks/bench_moe_*.py``. Every method is a
function ``(model, ctx) -> None`` that changes ``model`` in place; :func:`run_method` copies the base
model, times the pass (statistics collection included), evaluates the result and returns one table row.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from moe.compress import compress_experts, distill
from moe.drop import drop_experts
from moe.layers import count_expert_params, expert_bytes, find_moe_layers
from moe.merge import merge_experts
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.subject import (
    SubjectData,
    calibration,
    distill_batches,
    evaluate,
    generation_quality,
    greedy_continuations,
)
from moe.values import Allocation, Budget, Combine, Criterion, Grouping, Storage

__all__ = ["METHODS", "Context", "evaluate_lm", "model_summary", "run_method"]


@dataclass
class Context:
    """What a method may use: the subject's data, the uncompressed teacher and pass settings."""

    data: SubjectData
    teacher: nn.Module
    seed: int = 0
    calib_sequences: int = 256  # calibration sequences for statistics
    distill_steps: int = 200  # recovery distillation steps (<= 200 per the targets)
    distill_lr: float = 2e-3
    distill_batch: int = 16  # sequences per distillation step
    cached_tokens: int = 16384  # block inputs kept per layer (refit, NAEE search, bit sensitivity)
    gen_sequences: int = 256  # held-out prompts for the generation metrics (0 = off)
    extra: dict[str, Any] = field(default_factory=dict)

    def calib(self) -> list[dict[str, torch.Tensor]]:
        """The first ``calib_sequences`` training sequences as calibration batches."""
        return calibration(self.data, self.calib_sequences)

    def stats(self, model: nn.Module) -> Any:
        """Routing statistics of ``model`` on the calibration batches (block inputs cached)."""
        return collect_routing_stats(model, self.calib(), max_cached_tokens=self.cached_tokens)

    def generation(self, model: nn.Module) -> dict[str, float]:
        """:func:`moe.subject.generation_quality` on the first ``gen_sequences`` test windows, prompts
        of half a window, against the uncompressed teacher's greedy continuations (computed once)."""
        if not self.gen_sequences:
            return {}
        ids = self.data.test[: self.gen_sequences]
        prompt = ids.shape[1] // 2
        if "reference" not in self.extra:
            self.extra["reference"] = greedy_continuations(
                self.teacher, ids, prompt=prompt, new=prompt
            )
        return generation_quality(model, ids, self.extra["reference"], prompt=prompt)

    def distill(self, model: nn.Module, steps: int | None = None) -> None:
        """``steps`` (default ``distill_steps``) of recovery distillation from the teacher."""
        n = self.distill_steps if steps is None else steps
        if n > 0:
            batches = distill_batches(self.data, n, batch_size=self.distill_batch, seed=self.seed)
            distill(model, self.teacher, batches, steps=n, lr=self.distill_lr, seed=self.seed)


def model_summary(model: nn.Module) -> dict[str, float]:
    """Expert weights, measured expert bytes (:func:`moe.layers.expert_bytes`: the tensors as held),
    total parameters and active MoE-layer MFLOPs per token (2 per multiply-add; router + top-k experts)."""
    flops = 0.0
    layers = find_moe_layers(model)
    in_experts = {id(p) for layer in layers for p in layer.experts.parameters()}
    others = sum(p.numel() for p in model.parameters() if id(p) not in in_experts)
    for layer in layers:
        w_in, w_out = layer.get_weights()
        per_expert = w_in[0].numel() + w_out[0].numel()
        flops += 2 * (layer.num_routes * layer.hidden_size + layer.top_k * per_expert)
    return {
        "expert params": count_expert_params(model),
        "expert MB": expert_bytes(model) / 2**20,
        "total params": others + count_expert_params(model),  # packed experts count their weights
        "MoE MFLOPs/token": flops / 1e6,
    }


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Next-token accuracy and perplexity (decoder next token for Switch) over ``batches``."""
    model.eval()
    correct, nll, count = 0.0, 0.0, 0
    for batch in batches:
        logits = model(**batch).logits.float()
        target = batch.get("decoder_input_ids", batch["input_ids"])
        logits, target = logits[:, :-1], target[:, 1:]
        lp = logits.log_softmax(-1)
        nll += float(-lp.gather(-1, target[..., None]).sum())
        correct += float((logits.argmax(-1) == target).sum())
        count += target.numel()
    return {"accuracy": correct / count, "perplexity": math.exp(nll / count)}


def run_method(
    name: str,
    base: nn.Module,
    ctx: Context,
    fn: Callable[[nn.Module, Context], Any],
    baseline: dict[str, float] | None = None,
) -> tuple[dict[str, Any], nn.Module]:
    """Apply ``fn`` to a copy of ``base``; returns (row, compressed model)."""
    model = copy.deepcopy(base).eval()
    t0 = time.perf_counter()
    fn(model, ctx)
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = {**evaluate(model, ctx.data.test), **ctx.generation(model)}
    row: dict[str, Any] = {
        "method": name,
        **getattr(fn, "labels", {}),
        **model_summary(model),
        "pass seconds": seconds,
        **metrics,
    }
    if baseline is not None:
        row["retention"] = metrics["accuracy"] / baseline["accuracy"]
        row["ppl increase"] = metrics["perplexity"] / baseline["perplexity"] - 1
    return row, model


def _experts_per_layer(model: nn.Module) -> int:
    return find_moe_layers(model)[0].num_experts


# --------------------------------------------------------------------------------------------------
# Methods


Method = Callable[[nn.Module, Context], None]


@dataclass(frozen=True)
class Labelled:
    """A method with what it is (its recipe, the LS refit, its distillation steps); :func:`run_method`
    copies the labels into every row."""

    fn: Method
    labels: dict[str, Any]

    def __call__(self, model: nn.Module, ctx: Context) -> None:
        """Apply the method to ``model`` in place."""
        self.fn(model, ctx)


def labelled(fn: Method, recipe: str, refit: bool, distill_steps: int) -> Labelled:
    """``fn`` with its labels."""
    return Labelled(
        fn, {"recipe": recipe, "LS refit on calib": refit, "distill steps": distill_steps}
    )


def _uncompressed(model: nn.Module, ctx: Context) -> None:
    return None


baseline = labelled(_uncompressed, "uncompressed", False, 0)  # the model as it is


_RECIPES = {("router_logits", "average"): "our MC-SMoE port", ("hc", "average"): "our HC-SMoE port",
            ("kmeans", "subspace"): "our Sub-MoE port"}  # fmt: skip


def merge(
    target: int,
    *,
    grouping: Grouping = "router_logits",
    combine: Combine = "average",
    align: bool = True,
    budget: Budget = "uniform",
    refit: bool = True,
    steps: int = 0,
) -> Labelled:
    """Merging (:func:`moe.merge.merge_experts`): our ports of MC-SMoE (router-logit grouping,
    alignment, frequency-weighted averaging), HC-SMoE (hierarchical clustering of outputs) and Sub-MoE
    (k-means on outputs, shared-subspace merging), or our union merge; optionally with our
    least-squares refit of the down projections on calibration data and ``steps`` of KD."""

    def fn(model: nn.Module, ctx: Context) -> None:
        merge_experts(
            model,
            ctx.stats(model),
            num_experts=target,
            grouping=grouping,
            combine=combine,
            align=align,
            budget=budget,
            refit=refit,
            seed=ctx.seed,
        )
        ctx.distill(model, steps)

    recipe = _RECIPES.get((grouping, combine))
    if recipe is None:
        recipe = (
            "ours: union of neurons" if combine == "union" else f"{combine} merge"
        ) + f", {grouping} groups"
    if grouping == "random" or (grouping == "outputs" and combine == "average"):
        recipe = f"our MC-SMoE port, {grouping} groups"
    recipe += ", no alignment" if not align else ""
    return labelled(fn, recipe, refit, steps)


def drop(
    target: int,
    *,
    criterion: Criterion = "frequency",
    rounds: int = 1,
    budget: Budget = "uniform",
    steps: int = 0,
) -> Labelled:
    """Dropping (:func:`moe.drop.drop_experts`): our ports of the MC-Suite criteria or of NAEE's
    subset search (``exact``, ``greedy``), one-shot or in ``rounds``, then ``steps`` of KD."""

    def fn(model: nn.Module, ctx: Context) -> None:
        drop_experts(
            model,
            ctx.stats(model),
            num_experts=target,
            criterion=criterion,
            rounds=rounds,
            budget=budget,
            batches=ctx.calib(),
        )
        ctx.distill(model, steps)

    source = "our NAEE port" if criterion in ("exact", "greedy") else "our MC-Suite port"
    return labelled(fn, f"{source} ({criterion})", False, steps)


def drop_with_recovery(
    target: int, *, criterion: Criterion = "saliency", rounds: int = 2, steps_per_round: int = 100
) -> Labelled:
    """MC-Suite's iterative procedure: drop a share, distil for a few steps, re-estimate, repeat."""

    def fn(model: nn.Module, ctx: Context) -> None:
        start = _experts_per_layer(model)
        for r in range(1, rounds + 1):
            n = round(start - (start - target) * r / rounds)
            drop_experts(model, ctx.stats(model), num_experts=n, criterion=criterion)
            ctx.distill(model, steps_per_round)

    return labelled(
        fn, f"our MC-Suite port ({criterion}), KD per round", False, rounds * steps_per_round
    )


def merge_compress(
    target: int, keep_ratio: float, rank: int | None = None, steps: int = 200
) -> Labelled:
    """Merging with the LS refit, then neuron pruning (or low rank), then ``steps`` of KD."""

    def fn(model: nn.Module, ctx: Context) -> None:
        merge_experts(model, ctx.stats(model), num_experts=target, refit=True)
        compress_experts(model, ctx.stats(model), keep_ratio=keep_ratio, rank=rank)
        ctx.distill(model, steps)

    return labelled(fn, "our MC-SMoE port + neuron pruning", True, steps)


def quantize(avg_bits: float, allocation: Allocation, storage: Storage = "packed") -> Labelled:
    """Mixed-precision quantisation (:func:`moe.quantize.quantize_experts`): ours (sensitivity) or
    our ports of the QuantMoE-Bench heuristics, packed or fake storage."""

    def fn(model: nn.Module, ctx: Context) -> None:
        quantize_experts(
            model,
            ctx.stats(model),
            avg_bits=avg_bits,
            allocation=allocation,
            storage=storage,
        )

    source = "ours" if allocation == "sensitivity" else "our QuantMoE-Bench port"
    return labelled(fn, f"{source} ({allocation}), {storage} storage", False, 0)


METHODS: dict[str, Labelled] = {
    "baseline": baseline,
    "merge 8->4 + LS refit": merge(4),
    "merge 8->4 union + LS refit (ours)": merge(4, combine="union"),
    "merge 8->4 union + LS refit + 200 KD steps": merge(4, combine="union", steps=200),
    "merge 8->4 HC-SMoE port (no refit)": merge(4, grouping="hc", refit=False),
    "merge 8->4 HC-SMoE port + LS refit": merge(4, grouping="hc"),
    "merge 8->4 Sub-MoE port (no refit)": merge(
        4, grouping="kmeans", combine="subspace", refit=False
    ),
    "drop 8->4 REAP": drop(4, criterion="reap"),
    "drop 8->4 NAEE (exact)": drop(4, criterion="exact"),
    "merge 8->4 MC-SMoE port (no refit)": merge(4, refit=False),
    "merge 8->4 + LS refit + 200 KD steps": merge(4, steps=200),
    "merge 8->4 MC-SMoE port (no refit) + 200 KD steps": merge(4, refit=False, steps=200),
    "merge 8->4 random groups + LS refit": merge(4, grouping="random"),
    "merge 8->4 random groups (no refit)": merge(4, grouping="random", refit=False),
    "merge 8->4 no alignment + LS refit": merge(4, align=False),
    "merge 8->4 global budget + LS refit": merge(4, budget="global"),
    "drop 8->4 frequency": drop(4),
    "merge 8->4 + LS refit + prune to 72/128 neurons + 200 KD steps": merge_compress(4, 0.5625),
    "drop 25% one-shot (exact)": drop(6, criterion="exact"),
    "drop 25% one-shot (frequency)": drop(6, criterion="frequency"),
    "drop 50% iterative (exact)": drop(4, criterion="exact", rounds=2),
    "drop 50% iterative (saliency)": drop(4, criterion="saliency", rounds=2),
    "drop 50% iterative (saliency) + 100 KD steps/round": drop_with_recovery(4),
    "drop 50% iterative (exact) + 100 KD steps/round": drop_with_recovery(4, criterion="exact"),
    "quant 3.0 bits sensitivity (packed)": quantize(3.0, "sensitivity"),
    "quant 3.0 bits frequency (packed)": quantize(3.0, "frequency"),
    "quant 3.0 bits uniform (packed)": quantize(3.0, "uniform"),
    "quant 3.0 bits uniform (fake quant, fp32 storage)": quantize(3.0, "uniform", storage="fake"),
}
