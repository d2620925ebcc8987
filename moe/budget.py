"""The one budget rule of the expert-count passes (merging and dropping).

``num_experts`` is an integer count per layer, a mapping layer name -> count (other layers keep their
experts), or with ``budget="global"`` the mean count: the total ``num_experts × L`` is split by ranking
every layer's normalised scores ``s_e / Σ_e |s_e|`` together after each layer keeps its floor (MC-SMoE's
adaptive merging, MC-Suite's global dropping). Every count must satisfy ``floor <= n <= E`` of its layer;
everything is checked before a pass changes anything.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from moe.layers import MoEError, MoELayer

__all__ = ["as_count", "resolve_budget"]


def as_count(value: Any, what: str) -> int:
    """``value`` as an integer count; bools, non-integers and other types raise :class:`MoEError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MoEError(f"{what}={value!r} must be an integer number of experts")
    return int(value)


def resolve_budget(
    layers: Sequence[MoELayer],
    num_experts: int | Mapping[str, int],
    budget: str,
    floor: Callable[[MoELayer], int],
    scores: Callable[[MoELayer], torch.Tensor] | None = None,
) -> dict[str, int]:
    """Experts to keep per layer (see module docstring); raises :class:`MoEError` on any bad budget."""
    if budget not in ("uniform", "global"):
        raise MoEError(f"budget={budget!r}; use 'uniform' or 'global'")
    if isinstance(num_experts, Mapping):
        unknown = set(num_experts) - {layer.name for layer in layers}
        if unknown:
            raise MoEError(
                f"budget names unknown layers {sorted(unknown)}; use {[x.name for x in layers]}"
            )
        counts = {
            layer.name: as_count(
                num_experts.get(layer.name, layer.num_experts), f"num_experts[{layer.name!r}]"
            )
            for layer in layers
        }
    elif budget == "uniform":
        n = as_count(num_experts, "num_experts")
        counts = {layer.name: n for layer in layers}
    else:
        counts = _global(layers, as_count(num_experts, "num_experts"), floor, scores)
    for layer in layers:
        n, lo = counts[layer.name], floor(layer)
        if not lo <= n <= layer.num_experts:
            raise MoEError(
                f"cannot keep {n} experts in layer {layer.name}, which has {layer.num_experts} and "
                f"needs at least {lo}; choose {lo} <= num_experts <= {layer.num_experts}"
            )
    return counts


def _global(
    layers: Sequence[MoELayer],
    n: int,
    floor: Callable[[MoELayer], int],
    scores: Callable[[MoELayer], torch.Tensor] | None,
) -> dict[str, int]:
    if scores is None:
        raise MoEError("a global budget needs per-expert scores (a score criterion)")
    total = n * len(layers)
    low = sum(floor(layer) for layer in layers)
    high = sum(layer.num_experts for layer in layers)
    if not low <= total <= high:
        raise MoEError(
            f"global budget num_experts={n} ({total} experts over {len(layers)} layers) must lie "
            f"between {low} and {high} in total; choose a mean count within the layers' experts"
        )
    counts = {layer.name: floor(layer) for layer in layers}
    pool: list[tuple[float, int, str]] = []
    for i, layer in enumerate(layers):
        s = scores(layer).double()
        if not bool(s.isfinite().all()):
            raise MoEError(f"scores of layer {layer.name} are not finite")
        s = s / s.abs().sum().clamp_min(1e-30)
        pool += [(float(v), i, layer.name) for v in s.sort(descending=True).values[floor(layer) :]]
    pool.sort(key=lambda t: (-t[0], t[1]))
    for _, _, name in pool[: total - low]:
        counts[name] += 1
    return counts
