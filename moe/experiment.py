"""Run compression passes on a copy of a subject model and measure size, cost, time and retention.

Shared by ``qhybrid moe``, the reproduce stage and ``benchmarks/bench_moe_*.py``. Every method is a
function ``(model, ctx) -> None`` that changes ``model`` in place; :func:`run_method` copies the base
model, times the pass (statistics collection included), evaluates the result and returns one table row.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
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
from moe.subject import SubjectData, calibration, distill_batches, evaluate

__all__ = ["METHODS", "Context", "model_summary", "run_method"]


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
    extra: dict[str, Any] = field(default_factory=dict)

    def calib(self) -> list[dict[str, torch.Tensor]]:
        return calibration(self.data, self.calib_sequences)

    def stats(self, model: nn.Module) -> Any:
        return collect_routing_stats(model, self.calib(), max_cached_tokens=4096)

    def distill(self, model: nn.Module, steps: int | None = None) -> None:
        n = self.distill_steps if steps is None else steps
        if n > 0:
            batches = distill_batches(self.data, n, batch_size=self.distill_batch, seed=self.seed)
            distill(model, self.teacher, batches, steps=n, lr=self.distill_lr, seed=self.seed)


def model_summary(model: nn.Module) -> dict[str, float]:
    """Expert weights, measured expert bytes (:func:`moe.layers.expert_bytes`: the tensors as held),
    total parameters and active MoE-layer MFLOPs per token (2 per multiply-add; router + top-k experts)."""
    flops = 0.0
    for layer in find_moe_layers(model):
        w_in, w_out = layer.get_weights()
        per_expert = w_in[0].numel() + w_out[0].numel()
        flops += 2 * (layer.num_routes * layer.hidden_size + layer.top_k * per_expert)
    return {
        "expert params": count_expert_params(model),
        "expert MB": expert_bytes(model) / 2**20,
        "total params": sum(p.numel() for p in model.parameters()),
        "MoE MFLOPs/token": flops / 1e6,
    }


def run_method(
    name: str, base: nn.Module, ctx: Context, fn: Callable[[nn.Module, Context], Any],
    baseline: dict[str, float] | None = None,
) -> tuple[dict[str, Any], nn.Module]:  # fmt: skip
    """Apply ``fn`` to a copy of ``base``; returns (row, compressed model)."""
    model = copy.deepcopy(base).eval()
    t0 = time.perf_counter()
    fn(model, ctx)
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = evaluate(model, ctx.data.test)
    row: dict[str, Any] = {
        "method": name,
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


def baseline(model: nn.Module, ctx: Context) -> None:
    return None


def merge(target: int, *, grouping: str = "router_logits", align: bool = True,
          budget: str = "uniform", refit: bool = True, steps: int = 0
          ) -> Callable[[nn.Module, Context], None]:  # fmt: skip
    def fn(model: nn.Module, ctx: Context) -> None:
        merge_experts(model, ctx.stats(model), num_experts=target, grouping=grouping,  # type: ignore[arg-type]
                      align=align, budget=budget, refit=refit, seed=ctx.seed)  # type: ignore[arg-type]  # fmt: skip
        ctx.distill(model, steps)

    return fn


def drop(target: int, *, criterion: str = "frequency", rounds: int = 1, budget: str = "uniform",
         steps: int = 0) -> Callable[[nn.Module, Context], None]:  # fmt: skip
    def fn(model: nn.Module, ctx: Context) -> None:
        drop_experts(model, ctx.stats(model), num_experts=target, criterion=criterion,  # type: ignore[arg-type]
                     rounds=rounds, budget=budget, batches=ctx.calib())  # type: ignore[arg-type]  # fmt: skip
        ctx.distill(model, steps)

    return fn


def drop_with_recovery(target: int, *, criterion: str = "saliency", rounds: int = 2,
                       steps_per_round: int = 100) -> Callable[[nn.Module, Context], None]:  # fmt: skip
    """MC-Suite's iterative procedure: drop a share, distil for a few steps, re-estimate, repeat."""

    def fn(model: nn.Module, ctx: Context) -> None:
        start = _experts_per_layer(model)
        for r in range(1, rounds + 1):
            n = round(start - (start - target) * r / rounds)
            drop_experts(model, ctx.stats(model), num_experts=n, criterion=criterion)  # type: ignore[arg-type]
            ctx.distill(model, steps_per_round)

    return fn


def merge_compress(target: int, keep_ratio: float, rank: int | None = None,
                   steps: int = 200) -> Callable[[nn.Module, Context], None]:  # fmt: skip
    def fn(model: nn.Module, ctx: Context) -> None:
        merge_experts(model, ctx.stats(model), num_experts=target, refit=True)
        compress_experts(model, ctx.stats(model), keep_ratio=keep_ratio, rank=rank)
        ctx.distill(model, steps)

    return fn


def quantize(avg_bits: float, allocation: str) -> Callable[[nn.Module, Context], None]:
    def fn(model: nn.Module, ctx: Context) -> None:
        quantize_experts(model, ctx.stats(model), avg_bits=avg_bits, allocation=allocation)  # type: ignore[arg-type]

    return fn


METHODS: dict[str, Callable[[nn.Module, Context], None]] = {
    "baseline": baseline,
    "merge 8->4": merge(4),
    "merge 8->4 MC-SMoE (no refit)": merge(4, refit=False),
    "merge 8->4 + distill": merge(4, steps=200),
    "merge 8->4 random groups": merge(4, grouping="random"),
    "merge 8->4 no alignment": merge(4, align=False),
    "merge 8->4 global budget": merge(4, budget="global"),
    "drop 8->4 frequency": drop(4),
    "merge 8->4 + prune to 72/128 neurons + distill": merge_compress(4, 0.5625),
    "drop 25% one-shot (exact)": drop(6, criterion="exact"),
    "drop 25% one-shot (frequency)": drop(6, criterion="frequency"),
    "drop 50% iterative (exact)": drop(4, criterion="exact", rounds=2),
    "drop 50% iterative (saliency)": drop(4, criterion="saliency", rounds=2),
    "drop 50% iterative (saliency) + 100 distill steps/round": drop_with_recovery(4),
    "drop 50% iterative (exact) + 100 distill steps/round": drop_with_recovery(
        4, criterion="exact"
    ),
    "quant 3.0 bits sensitivity": quantize(3.0, "sensitivity"),
    "quant 3.0 bits frequency": quantize(3.0, "frequency"),
    "quant 3.0 bits uniform": quantize(3.0, "uniform"),
}
