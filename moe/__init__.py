"""Mixture-of-Experts compression passes over transformers 5.x sparse-MoE models.

Local Hugging Face checkpoints (:mod:`moe.checkpoint`), routing statistics, expert merging (our
MC-SMoE port, optionally with a least-squares refit on calibration data), low-rank + structured-sparse
compression, expert dropping (MC-Suite criteria, NAEE search), mixed-precision quantisation stored as
packed low-bit codes, and a compression plan that makes every result reload exactly. Every pass checks
the whole model before it changes anything. Heavy modules load lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LowRankExperts",
    "MoEError",
    "MoELayer",
    "PackedExperts",
    "RoutingStats",
    "allocate_bits",
    "collect_routing_stats",
    "compress_experts",
    "count_expert_params",
    "distill",
    "drop_experts",
    "expert_bytes",
    "load_moe_checkpoint",
    "find_moe_layers",
    "load_compressed",
    "merge_experts",
    "quantize_experts",
    "save_compressed",
]

_WHERE = {
    "LowRankExperts": "moe.experts", "PackedExperts": "moe.experts",
    "compress_experts": "moe.compress", "distill": "moe.compress",
    "MoEError": "moe.layers", "MoELayer": "moe.layers", "find_moe_layers": "moe.layers",
    "count_expert_params": "moe.layers", "expert_bytes": "moe.layers", "RoutingStats": "moe.stats",
    "collect_routing_stats": "moe.stats", "drop_experts": "moe.drop", "merge_experts": "moe.merge",
    "allocate_bits": "moe.quantize", "quantize_experts": "moe.quantize",
    "load_compressed": "moe.checkpoint", "save_compressed": "moe.checkpoint",
    "load_moe_checkpoint": "moe.checkpoint",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'moe' has no attribute {name!r}")
