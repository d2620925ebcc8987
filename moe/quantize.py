"""Mixed-precision quantisation of routed experts under an average-bit budget.

Weights are rounded to ``b`` bits with group-wise asymmetric min-max scales (groups of ``group_size``
consecutive input weights per output row; fp16 scale and minimum per group) and, with
``storage="packed"`` (the default), stored for real as packed b-bit codes in
:class:`moe.experts.PackedExperts` (dequantised per routed expert in the forward); with
``storage="fake"`` (the ablation) the rounded weights are kept in the model's float dtype, so nothing
is saved in memory or on disk. Sizes are measured from the tensors (:func:`moe.layers.expert_bytes`).

Bit allocation (one width per expert, chosen from ``bits_choices``, mean over all expert weights
<= ``avg_bits``):

* ``sensitivity`` (ours): for every expert e and width b the measured output error on calibration inputs
  routed to it, ``D_e(b) = f_e · mean_t g_t² ‖E_e(x_t) − E_e^{(b)}(x_t)‖²`` (f = routing frequency,
  g = gate weight) — the expected squared error it adds to the layer output — then a greedy
  multiple-choice knapsack: start at the lowest width and repeatedly take the upgrade with the largest
  error reduction per extra bit that still fits.
* QuantMoE-Bench heuristics (Duanmu et al., arXiv 2406.08155): ``frequency`` — the most frequently
  routed experts (global ranking) get the high width, the rest the low one, in the share that meets the
  budget; ``outlier`` — the same ranked by the weight outlier score ``max_j(max_i |W_ij| / mean_i |W_ij|)``;
  ``uniform`` — every expert at ``round(avg_bits)`` bits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from moe.experts import PackedExperts, fake_quantize
from moe.layers import MoEError, MoELayer, apply_expert, check_layers, expert_bytes, find_moe_layers
from moe.modeling import check_group_size
from moe.plan import record
from moe.stats import RoutingStats
from moe.values import Allocation, AverageBits, BitsChoices, Count, Storage, check_options

logger = logging.getLogger(__name__)

__all__ = ["allocate_bits", "fake_quantize", "quantize_experts"]


@torch.no_grad()
def _expert_errors(
    layer: MoELayer, stats: RoutingStats, bits_choices: Sequence[int], group_size: int
) -> torch.Tensor:
    """(E, len(bits_choices)) expected squared output error D_e(b) (see module docstring)."""
    s = stats[layer.name]
    x = s.sample.to(layer.device, layer.router_weight.dtype)
    if x.numel() == 0:
        raise MoEError(
            f"no cached inputs for {layer.name}; collect stats with max_cached_tokens > 0"
        )
    _, weights, idx = layer.route(x)
    emap = layer.expert_map[idx]
    w_in, w_out = layer.get_weights()
    freq = torch.zeros(layer.num_experts, dtype=torch.float64)
    freq.index_add_(0, layer.expert_map.cpu(), s.counts / max(s.tokens, 1))
    out = torch.zeros(layer.num_experts, len(bits_choices), dtype=torch.float64)
    for e in range(layer.num_experts):
        tok, pos = torch.where(emap == e)
        if tok.numel() >= 8:
            xe, g2 = x[tok], weights[tok, pos].double().pow(2).mean()
        else:  # too few routed samples: use every cached token, mean gate weight 1/k
            xe, g2 = x, torch.tensor(1.0 / layer.top_k**2, dtype=torch.float64)
        ref, _ = apply_expert(layer.act, w_in[e], w_out[e], xe)
        for j, b in enumerate(bits_choices):
            qi, qo = fake_quantize(w_in[e], b, group_size), fake_quantize(w_out[e], b, group_size)
            err = (apply_expert(layer.act, qi, qo, xe)[0] - ref).double().pow(2).sum(-1).mean()
            out[e, j] = freq[e] * g2 * err
    return out


def _outlier_score(layer: MoELayer) -> torch.Tensor:
    w_in, w_out = layer.get_weights()
    scores = []
    for e in range(layer.num_experts):
        s = 0.0
        for w in (*w_in[e], w_out[e]):
            a = w.detach().abs().double()
            s = max(s, float((a.amax(0) / a.mean(0).clamp_min(1e-12)).max()))
        scores.append(s)
    return torch.tensor(scores, dtype=torch.float64)


def _check_widths(bits_choices: Sequence[int], avg_bits: float) -> list[int]:
    """The widths in order, checked to reach the budget ``avg_bits`` (the kinds are checked by
    :func:`moe.values.check_options` first)."""
    choices = sorted(bits_choices)
    if not choices[0] <= avg_bits <= choices[-1]:
        raise MoEError(
            f"avg_bits={avg_bits} cannot be met with widths {choices}; choose a budget in "
            f"[{choices[0]}, {choices[-1]}]"
        )
    return choices


def allocate_bits(
    model: nn.Module,
    stats: RoutingStats,
    *,
    avg_bits: AverageBits = 3.0,
    allocation: Allocation = "sensitivity",
    bits_choices: BitsChoices = (2, 3, 4, 8),
    group_size: Count = 32,
) -> dict[str, list[int]]:
    """Bits per expert of every MoE layer (see module docstring); does not change the model."""
    opts = check_options(allocate_bits, locals())
    layers = find_moe_layers(model)
    check_layers(layers)
    stats.check(layers)
    choices = _check_widths(opts["bits_choices"], avg_bits)
    sizes = []  # (layer, expert, weights)
    for layer in layers:
        w_in, w_out = layer.get_weights()
        n = w_in[0].numel() + w_out[0].numel()
        sizes += [(layer.name, e, n) for e in range(layer.num_experts)]
    total = sum(n for *_, n in sizes)
    budget = avg_bits * total
    bits = {(name, e): choices[0] for name, e, _ in sizes}
    size_of = {(name, e): n for name, e, n in sizes}
    if allocation == "uniform":
        width = min(choices, key=lambda b: (abs(b - avg_bits), b))
        if width > avg_bits:
            width = max(b for b in choices if b <= avg_bits)
        bits = {k: width for k in bits}
    elif allocation in ("frequency", "outlier"):
        # QuantMoE-Bench: the low width for most experts, the next width above the budget for the top
        lo = choices[0]
        hi = min((b for b in choices if b > avg_bits), default=choices[-1])
        ranked = []
        for layer in layers:
            if allocation == "frequency":
                f = torch.zeros(layer.num_experts, dtype=torch.float64)
                f.index_add_(0, layer.expert_map.cpu(), stats[layer.name].frequency)
            else:
                f = _outlier_score(layer)
            ranked += [(float(f[e]), layer.name, e) for e in range(layer.num_experts)]
        ranked.sort(key=lambda t: -t[0])
        used = lo * total
        for _, name, e in ranked:
            extra = (hi - lo) * size_of[(name, e)]
            if used + extra <= budget + 1e-9:
                bits[(name, e)] = hi
                used += extra
    elif allocation == "sensitivity":
        errors = {layer.name: _expert_errors(layer, stats, choices, group_size) for layer in layers}
        used = choices[0] * total
        while True:
            best, best_gain = None, 0.0
            for (name, e), b in bits.items():
                j = choices.index(b)
                err = errors[name][e]
                for j2 in range(j + 1, len(choices)):
                    extra = (choices[j2] - b) * size_of[(name, e)]
                    if used + extra > budget + 1e-9:
                        break
                    gain = float(err[j] - err[j2]) / extra
                    if gain > best_gain:
                        best, best_gain = ((name, e), choices[j2], extra), gain
            if best is None:
                break
            (key, b2, extra) = best
            bits[key] = b2
            used += extra
    else:
        raise MoEError(
            f"allocation={allocation!r}; use 'sensitivity', 'frequency', 'outlier' or 'uniform'"
        )
    return {
        layer.name: [bits[(layer.name, e)] for e in range(layer.num_experts)] for layer in layers
    }


def quantize_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    avg_bits: AverageBits = 3.0,
    allocation: Allocation = "sensitivity",
    bits_choices: BitsChoices = (2, 3, 4, 8),
    group_size: Count = 32,
    storage: Storage = "packed",
) -> dict[str, Any]:
    """Allocate bits per expert and quantise the experts in place, all layers or none.

    Args:
        storage: ``"packed"`` stores b-bit codes (:class:`moe.experts.PackedExperts`, fused layouts,
            widths 1..8); ``"fake"`` keeps the rounded weights in float (ablation, any layout).

    Returns:
        ``{"bits": {layer: [bits per expert]}, "avg_bits": mean bits per expert weight,
        "bytes": measured bytes of the expert tensors after quantisation}``.
    """
    check_options(quantize_experts, locals())
    layers = find_moe_layers(model)
    check_layers(layers, writable=True)
    for layer in layers:  # every layer's widths before the first changes
        check_group_size(layer.hidden_size, group_size, f"layer {layer.name} gate/up projection")
        check_group_size(layer.intermediate_size, group_size, f"layer {layer.name} down projection")
    if storage == "packed":
        if any(not layer.gated for layer in layers):
            raise MoEError("packed storage needs fused experts (not Switch); use storage='fake'")
        if any(b > 8 for b in bits_choices if isinstance(b, int)):
            raise MoEError(f"packed storage holds 1..8 bits; got bits_choices={list(bits_choices)}")
    bits = allocate_bits(
        model,
        stats,
        avg_bits=avg_bits,
        allocation=allocation,
        bits_choices=bits_choices,
        group_size=group_size,
    )
    ops = []
    n_weights = 0
    weighted = 0.0
    with torch.no_grad():
        for layer in layers:  # nothing below can fail: layers, widths and stats checked above
            w_in, w_out = layer.get_weights()
            per = w_in[0].numel() + w_out[0].numel()
            n_weights += per * layer.num_experts
            weighted += per * sum(bits[layer.name])
            if storage == "packed":
                PackedExperts.install(layer, bits[layer.name], group_size)
            else:
                new_in = torch.stack(
                    [fake_quantize(w_in[e], b, group_size) for e, b in enumerate(bits[layer.name])]
                )
                new_out = torch.stack(
                    [fake_quantize(w_out[e], b, group_size) for e, b in enumerate(bits[layer.name])]
                )
                layer.set_weights(new_in, new_out)
            ops.append(
                {
                    "op": "quantize",
                    "layer": layer.name,
                    "bits": bits[layer.name],
                    "group_size": group_size,
                    "allocation": allocation,
                    "storage": storage,
                }
            )
    record(model, ops)
    return {"bits": bits, "avg_bits": weighted / max(n_weights, 1), "bytes": expert_bytes(model)}
