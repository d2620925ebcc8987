"""Streaming routing statistics of a sparse-MoE model over calibration batches.

:func:`collect_routing_stats` hooks every MoE block, recomputes its routing on the block input and
accumulates per layer, over the non-padding tokens only, with memory independent of the token count:

* ``counts[r]`` — top-k selections of router output r; ``weighted_counts[r]`` — the sum of its gate
  weights g (router-weighted frequency);
* ``gram = Σ_t l_t l_tᵀ`` (R, R) of the router logits l_t, so the cosine similarity of two experts'
  logit columns over all tokens (MC-SMoE's grouping signal, arXiv 2310.01334) is exact:
  ``cos(i, j) = gram_ij / sqrt(gram_ii gram_jj)`` — without storing a (tokens × R) matrix;
* ``co_selection[i, j]`` — tokens that selected both i and j;
* per physical expert e, over the tokens routed to it: ``output_norm[e] = Σ ‖E_e(x)‖``,
  ``saliency[e] = Σ g ‖E_e(x)‖`` (REAP, arXiv 2510.13999), the activation-mass entropy terms
  ``Σ a`` and ``Σ a log a`` with ``a = g ‖E_e(x)‖``, and ``act_sq[e, i] = Σ h_i²`` (neuron second
  moments, for structured pruning);
* a bounded sample of block inputs (the first ``max_cached_tokens`` tokens), for reconstruction searches
  (NAEE) and quantisation sensitivity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from moe.layers import MoEError, MoELayer, check_layers, find_moe_layers
from moe.values import NonNegativeCount, check_options

__all__ = ["LayerStats", "RoutingStats", "collect_routing_stats"]


@dataclass
class LayerStats:
    """Accumulated statistics of one MoE layer (float64 sums; see module docstring)."""

    name: str
    num_routes: int
    num_experts: int
    intermediate: int
    fingerprint: str = ""  # MoELayer.fingerprint() of the weights the statistics were collected on
    tokens: int = 0
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    weighted_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    gram: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    co_selection: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    expert_tokens: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    output_norm: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    saliency: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    mass: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    mass_log_mass: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    act_sq: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    sample: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def __post_init__(self) -> None:
        r, e, i = self.num_routes, self.num_experts, self.intermediate
        z = torch.zeros
        f64 = torch.float64
        self.counts, self.weighted_counts = z(r, dtype=f64), z(r, dtype=f64)
        self.gram, self.co_selection = z(r, r, dtype=f64), z(r, r, dtype=f64)
        self.expert_tokens, self.output_norm, self.saliency = (
            z(e, dtype=f64),
            z(e, dtype=f64),
            z(e, dtype=f64),
        )
        self.mass, self.mass_log_mass = z(e, dtype=f64), z(e, dtype=f64)
        self.act_sq = z(e, i, dtype=f64)
        self.sample = z(0, 0)

    # -- derived quantities -------------------------------------------------------------------------
    @property
    def frequency(self) -> torch.Tensor:
        """(R,) share of tokens that selected each router output."""
        return self.counts / max(self.tokens, 1)

    def logit_cosine(self) -> torch.Tensor:
        """(R, R) exact cosine similarity of the router-logit columns over all tokens."""
        d = self.gram.diagonal().clamp_min(1e-30).sqrt()
        return self.gram / (d[:, None] * d[None, :])

    def activation_entropy(self) -> torch.Tensor:
        """(E,) entropy (nats) of each expert's activation mass a_t = g_t‖E(x_t)‖ over its tokens:
        ``H = log S - (Σ a log a) / S`` with ``S = Σ a``; 0 for unused experts."""
        s = self.mass.clamp_min(1e-30)
        h = (torch.log(s) - self.mass_log_mass / s).clamp_min(0)  # >= 0; rounding can dip below
        return torch.where(self.mass > 0, h, torch.zeros_like(h))

    def nbytes(self) -> int:
        """Bytes the statistics hold (they do not grow with the number of tokens)."""
        return sum(
            t.numel() * t.element_size()
            for t in (
                self.counts,
                self.weighted_counts,
                self.gram,
                self.co_selection,
                self.expert_tokens,
                self.output_norm,
                self.saliency,
                self.mass,
                self.mass_log_mass,
                self.act_sq,
                self.sample,
            )
        )


@dataclass
class RoutingStats:
    """Statistics of every MoE layer, keyed by the block's module path."""

    layers: dict[str, LayerStats]
    batches: int = 0

    def __getitem__(self, name: str) -> LayerStats:
        if name not in self.layers:
            raise MoEError(
                f"no routing statistics for layer {name!r} (have {list(self.layers)}); collect them "
                "on this model with collect_routing_stats(model, batches)"
            )
        return self.layers[name]

    def check(self, layers: list[MoELayer]) -> None:
        """Raise unless these statistics were collected on exactly these layers' current weights."""
        for layer in layers:
            s = self[layer.name]
            if (s.num_routes, s.num_experts) != (layer.num_routes, layer.num_experts):
                raise MoEError(
                    f"statistics of {layer.name} are for {s.num_routes} routes / {s.num_experts} "
                    f"experts but the layer has {layer.num_routes} / {layer.num_experts}; re-collect "
                    "them after changing the model"
                )
            if s.fingerprint != layer.fingerprint():
                raise MoEError(
                    f"statistics of {layer.name} were collected on other weights (fingerprint "
                    f"{s.fingerprint[:8]} != {layer.fingerprint()[:8]}); re-collect them on this model "
                    "as it is now"
                )


def _token_mask(layer: MoELayer, batch: Mapping[str, torch.Tensor], n: int) -> torch.Tensor | None:
    key = "decoder_attention_mask" if ".decoder." in f".{layer.name}." else "attention_mask"
    mask = batch.get(key)
    if mask is None:
        return None
    mask = mask.reshape(-1).bool()
    if mask.numel() != n:
        raise MoEError(
            f"{key} has {mask.numel()} positions but layer {layer.name} saw {n} tokens; pass masks "
            "that match the inputs"
        )
    return mask


@torch.no_grad()
def _accumulate(layer: MoELayer, s: LayerStats, x: torch.Tensor, max_cached: int) -> None:
    x = x.reshape(-1, x.shape[-1]).to(layer.router_weight.dtype)
    logits, weights, idx = layer.route(x)
    logits, weights = logits.double(), weights.double()
    r = layer.num_routes
    s.tokens += x.shape[0]
    sel = torch.zeros(x.shape[0], r, dtype=torch.float64, device=x.device)
    sel.scatter_(1, idx, 1.0)  # (T, R) 1 where chosen
    gsel = torch.zeros_like(sel).scatter_(1, idx, weights)  # (T, R) gate weights where chosen
    s.counts += sel.sum(0).cpu()
    s.weighted_counts += gsel.sum(0).cpu()
    s.gram += (logits.T @ logits).cpu()
    s.co_selection += (sel.T @ sel).cpu()
    emap = layer.expert_map[idx]  # (T, k) physical experts
    for e in emap.unique().tolist():
        tok, pos = torch.where(emap == e)
        y, h = layer.expert_forward(e, x[tok])
        norm = y.double().norm(dim=-1)
        a = weights[tok, pos] * norm
        s.expert_tokens[e] += tok.numel()
        s.output_norm[e] += float(norm.sum())
        s.saliency[e] += float(a.sum())
        s.mass[e] += float(a.sum())
        s.mass_log_mass[e] += float((a * torch.log(a.clamp_min(1e-30))).sum())
        s.act_sq[e] += (h.double() ** 2).sum(0).cpu()
    if s.sample.shape[0] < max_cached:
        take = x[: max_cached - s.sample.shape[0]].detach().float().cpu()
        s.sample = take if s.sample.numel() == 0 else torch.cat([s.sample, take])


@torch.no_grad()
def collect_routing_stats(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    max_cached_tokens: NonNegativeCount = 2048,
) -> RoutingStats:
    """Run ``model(**batch)`` over ``batches`` and accumulate routing statistics of every MoE layer.

    Args:
        model: a transformers MoE model (see :mod:`moe.layers` for the supported layouts).
        batches: dicts accepted by ``model(**batch)``; ``attention_mask`` (and for encoder-decoder
            models ``decoder_attention_mask``) marks real tokens — padding is left out of every sum.
        max_cached_tokens: block inputs kept per layer for reconstruction-based passes.

    Returns:
        :class:`RoutingStats`; its memory does not grow with the number of tokens.
    """
    check_options(collect_routing_stats, locals(), skip=("model", "batches"))
    layers = find_moe_layers(model)
    check_layers(layers)
    stats = {
        lay.name: LayerStats(
            lay.name,
            lay.num_routes,
            lay.num_experts,
            lay.intermediate_size,
            fingerprint=lay.fingerprint(),
        )
        for lay in layers
    }
    current: dict[str, Mapping[str, torch.Tensor]] = {}
    handles = []

    def make_hook(layer: MoELayer):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            x = x.reshape(-1, x.shape[-1])
            mask = _token_mask(layer, current["batch"], x.shape[0])
            if mask is not None:
                x = x[mask.to(x.device)]
            _accumulate(layer, stats[layer.name], x, max_cached_tokens)

        return hook

    for layer in layers:
        handles.append(layer.block.register_forward_pre_hook(make_hook(layer)))
    was_training = model.training
    model.eval()
    device = layers[0].device  # accelerate's execution device when the model is offloaded
    n = 0
    try:
        for batch in batches:
            batch = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            current["batch"] = batch
            try:
                model(**batch)
            except (RuntimeError, TypeError, ValueError, IndexError) as err:
                raise MoEError(
                    f"model(**batch) failed on calibration batch {n}: {err}; pass batches of "
                    "input_ids (and attention_mask) that fit this model"
                ) from err
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise MoEError("collect_routing_stats got no batches; pass at least one calibration batch")
    for s in stats.values():
        if s.tokens == 0:
            raise MoEError(f"layer {s.name} saw no unmasked tokens; check the attention masks")
        if not math.isfinite(float(s.gram.sum())):
            raise MoEError(f"router logits of layer {s.name} are not finite")
    return RoutingStats(stats, batches=n)
