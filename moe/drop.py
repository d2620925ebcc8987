"""Expert dropping: remove whole experts and their router rows.

Criteria (higher score = keep); the first six are MC-Suite's (arXiv 2504.05586) families:

* ``frequency`` — top-k selection counts; ``weighted_frequency`` — sum of gate weights;
* ``saliency`` — total routed contribution ``Σ_t g_t ‖E(x_t)‖``; ``reap`` — its mean over routed
  tokens (REAP, arXiv 2510.13999);
* ``entropy`` — entropy of the expert's activation mass over tokens (experts that serve few tokens go);
* ``weight_norm`` — ``‖[W_in; W_outᵀ]‖_F``; ``stable_rank`` — ``‖W‖_F² / ‖W‖_2²`` of the same matrix;
* ``exact`` — NAEE (Lu et al., arXiv 2402.14800): enumerate every subset of ``num_experts`` experts and
  keep the one whose masked routing reconstructs the layer output best on cached calibration inputs,
  ``min_S Σ_t ‖Z_t − Ẑ_t(S)‖²``; ``greedy`` — the same loss, removing one expert at a time (for large E).

Dropping is one-shot (``rounds=1``) or iterative: the count falls in ``rounds`` steps and the statistics
are re-collected on ``batches`` after each step (MC-Suite's iterative estimate-and-prune). Router rows are
sliced in place and every expert count is kept consistent.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from moe.budget import resolve_budget
from moe.layers import MoEError, MoELayer, check_layers, find_moe_layers
from moe.plan import record
from moe.stats import LayerStats, RoutingStats, collect_routing_stats
from moe.values import CRITERIA, Budget, Count, Criterion, check_options

logger = logging.getLogger(__name__)

__all__ = ["CRITERIA", "drop_experts", "expert_scores", "search_subset"]


@torch.no_grad()
def expert_scores(layer: MoELayer, s: LayerStats, criterion: str) -> torch.Tensor:
    """(E,) keep-scores of a score-based criterion (higher = more important)."""
    if criterion == "frequency":
        return s.counts.clone()
    if criterion == "weighted_frequency":
        return s.weighted_counts.clone()
    if criterion == "saliency":
        return s.saliency.clone()
    if criterion == "reap":
        return s.saliency / s.expert_tokens.clamp_min(1)
    if criterion == "entropy":
        return s.activation_entropy()
    if criterion in ("weight_norm", "stable_rank"):
        w_in, w_out = layer.get_weights()
        e, p, i, h = w_in.shape
        mats = torch.cat([w_in.reshape(e, p * i, h), w_out.transpose(1, 2)], dim=1).double()
        fro2 = mats.pow(2).sum((1, 2))
        if criterion == "weight_norm":
            return fro2.sqrt().cpu()
        top = torch.linalg.matrix_norm(mats, ord=2)
        return (fro2 / top.pow(2)).cpu()
    raise MoEError(f"criterion={criterion!r}; choose one of {CRITERIA}")


@torch.no_grad()
def _reconstruction(
    layer: MoELayer, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Router logits (N, E), expert outputs Y (E, N, H) and the full output Z (N, H) on inputs x."""
    x = x.to(layer.device, layer.router_weight.dtype)
    logits = layer.route(x)[0].float()
    ys = torch.stack([layer.expert_forward(e, x)[0] for e in range(layer.num_experts)]).float()
    return logits, ys, layer.moe_forward(x).float()


def _masked_output(
    layer: MoELayer, logits: torch.Tensor, ys: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    masked = logits.masked_fill(~keep, float("-inf"))
    probs = masked.softmax(-1)
    k = min(layer.top_k, int(keep.sum()))
    w, idx = probs.topk(k, dim=-1)
    if layer.kind == "fused" and getattr(layer.router, "norm_topk_prob", True):
        w = w / w.sum(-1, keepdim=True)
    n = torch.arange(logits.shape[0], device=logits.device)
    out = torch.zeros_like(ys[0])
    for j in range(k):
        out += w[:, j, None] * ys[idx[:, j], n]
    return out


def search_subset(
    layer: MoELayer,
    s: LayerStats,
    num_experts: int,
    *,
    method: str = "exact",
    max_subsets: int = 20_000,
) -> list[int]:
    """Experts to keep that minimise the reconstruction loss on ``s.sample`` (NAEE)."""
    if s.sample.numel() == 0:
        raise MoEError(
            f"no cached inputs for layer {layer.name}; collect stats with max_cached_tokens > 0"
        )
    logits, ys, z = _reconstruction(layer, s.sample)
    e = layer.num_experts

    def loss(keep_ids: Iterable[int]) -> float:
        mask = torch.zeros(e, dtype=torch.bool, device=logits.device)
        mask[list(keep_ids)] = True
        return float((_masked_output(layer, logits, ys, mask) - z).pow(2).sum())

    if method == "exact":
        n = math.comb(e, num_experts)
        if n > max_subsets:
            raise MoEError(
                f"exact search over C({e}, {num_experts}) = {n} subsets exceeds max_subsets="
                f"{max_subsets}; use criterion='greedy'"
            )
        best = min(itertools.combinations(range(e), num_experts), key=loss)
        return list(best)
    keep = list(range(e))
    while len(keep) > num_experts:
        drop = min(keep, key=lambda j: loss([i for i in keep if i != j]))
        keep.remove(drop)
    return keep


def _targets(
    layers: list[MoELayer],
    stats: RoutingStats,
    num_experts: int | Mapping[str, int],
    budget: str,
    criterion: str,
) -> dict[str, int]:
    scores = None
    if criterion not in ("exact", "greedy"):
        scores = lambda layer: expert_scores(layer, stats[layer.name], criterion)  # noqa: E731
    return resolve_budget(
        layers, num_experts, budget, floor=lambda layer: layer.top_k, scores=scores
    )


def _drop_once(
    model: nn.Module,
    layers: list[MoELayer],
    stats: RoutingStats,
    targets: dict[str, int],
    criterion: str,
) -> dict[str, list[int]]:
    kept: dict[str, list[int]] = {}
    plans = {}
    for layer in layers:  # decide everything first: an error leaves the model unchanged
        n = targets[layer.name]
        if n == layer.num_experts:
            continue
        s = stats[layer.name]
        if criterion in ("exact", "greedy"):
            keep = sorted(search_subset(layer, s, n, method=criterion))
        else:
            sc = expert_scores(layer, s, criterion)
            order = sorted(range(layer.num_experts), key=lambda i: (-float(sc[i]), i))
            keep = sorted(order[:n])
        plans[layer.name] = keep
    ops = []
    with torch.no_grad():
        for layer in layers:
            if layer.name not in plans:
                continue
            keep = plans[layer.name]
            w_in, w_out = layer.get_weights()
            layer.slice_router(keep)
            layer.set_weights(w_in[keep].clone(), w_out[keep].clone())
            kept[layer.name] = keep
            ops.append({"op": "drop", "layer": layer.name, "keep": keep, "criterion": criterion})
    record(model, ops)
    return kept


def drop_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    num_experts: int | Mapping[str, int],
    criterion: Criterion = "frequency",
    budget: Budget = "uniform",
    rounds: Count = 1,
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Drop experts down to ``num_experts`` per layer, in place.

    Args:
        model: a transformers MoE model; ``stats`` collected on it as it is now.
        stats: from :func:`moe.stats.collect_routing_stats`.
        num_experts: experts kept per layer (or layer name -> count; with ``budget="global"`` the mean).
        criterion: one of :data:`CRITERIA`.
        budget: ``"uniform"`` or ``"global"`` (scores normalised per layer and ranked together).
        rounds: 1 = one-shot; > 1 = iterative, re-collecting statistics on ``batches`` between rounds.
        batches: calibration batches (required when ``rounds > 1``).

    Returns:
        ``{"kept": {layer: [original expert ids kept]}, "counts": {layer: n}}``.

    Raises:
        MoEError: no MoE layers, a merged layer, an impossible budget, stats that do not fit, or
            iterative dropping without batches; the model is then unchanged.
    """
    check_options(drop_experts, locals(), skip=("model", "stats", "num_experts", "batches"))
    layers = find_moe_layers(model)
    check_layers(layers, writable=True)
    stats.check(layers)
    for layer in layers:
        if layer.has_expert_map:
            raise MoEError(f"layer {layer.name} is merged; drop experts before merging")
    cached = list(batches) if batches is not None else None
    if rounds > 1 and not cached:
        raise MoEError("iterative dropping (rounds > 1) re-estimates statistics: pass batches=")
    final = _targets(layers, stats, num_experts, budget, criterion)
    if (
        rounds > 1
    ):  # the later rounds' statistics must be collectable: try one batch before changing
        assert cached is not None
        collect_routing_stats(model, cached[:1], max_cached_tokens=0)
    start = {layer.name: layer.num_experts for layer in layers}
    original = {layer.name: list(range(layer.num_experts)) for layer in layers}
    for r in range(1, rounds + 1):
        if r > 1:
            assert cached is not None
            stats = collect_routing_stats(model, cached, max_cached_tokens=_cached_tokens(stats))
            layers = find_moe_layers(model)
        targets = {
            name: max(final[name], round(start[name] - (start[name] - final[name]) * r / rounds))
            for name in final
        }
        kept = _drop_once(model, layers, stats, targets, criterion)
        for name, keep in kept.items():
            original[name] = [original[name][i] for i in keep]
    return {"kept": original, "counts": final}


def _cached_tokens(stats: RoutingStats) -> int:
    return max((s.sample.shape[0] for s in stats.layers.values()), default=0)
