"""Expert modules that replace the stock fused experts: low-rank factors and packed low-bit codes.

Both keep the transformers experts call signature ``(hidden (T, H), top_k_index (T, k),
top_k_weights (T, k)) -> (T, H)`` and expose ``dense()`` (the canonical weights, for the passes that
read them). They live in :mod:`moe.modeling`, the standalone loading code that is also written into
every compressed checkpoint folder (so a folder loads where qhybrid is not installed); this module
names them for the passes. See :mod:`moe.modeling` for the packed storage format.
"""

from __future__ import annotations

from moe.modeling import (
    LowRankExperts,
    PackedExperts,
    dequantize_groups,
    fake_quantize,
    pack_bits,
    quantize_groups,
    unpack_bits,
)

__all__ = [
    "LowRankExperts",
    "PackedExperts",
    "dequantize_groups",
    "fake_quantize",
    "pack_bits",
    "quantize_groups",
    "unpack_bits",
]
