"""Fake quantisation and bit allocation under an average-bit budget."""

from __future__ import annotations

import pytest
import torch

from moe.layers import MoEError
from moe.quantize import allocate_bits, fake_quantize, quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_uses_2_pow_b_levels_per_group(bits: int) -> None:
    w = torch.randn(3, 5, 64)
    q = fake_quantize(w, bits, group_size=32)
    groups = q.reshape(3, 5, 2, 32)
    assert max(len(torch.unique(g)) for g in groups.reshape(-1, 32)) <= 2**bits
    # error bounded by half a step of each group's range
    x = w.reshape(3, 5, 2, 32)
    step = (x.amax(-1) - x.amin(-1)) / (2**bits - 1)
    assert ((groups - x).abs().amax(-1) <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("allocation", ["sensitivity", "frequency", "outlier", "uniform"])
def test_allocations_meet_the_budget(allocation: str) -> None:
    model = tiny_moe("mixtral")
    stats = collect_routing_stats(model, [tiny_batch(model, batch=4, seq=16)])
    bits = allocate_bits(model, stats, avg_bits=3.0, allocation=allocation)
    flat = [b for v in bits.values() for b in v]
    assert sum(flat) / len(flat) <= 3.0 + 1e-9
    assert sum(flat) / len(flat) >= 2.5


def test_quantize_records_plan_and_errors() -> None:
    model = tiny_moe("qwen2_moe")
    b = tiny_batch(model)
    stats = collect_routing_stats(model, [b])
    with pytest.raises(MoEError, match="cannot be met"):
        quantize_experts(model, stats, avg_bits=1.5)
    out = quantize_experts(model, stats, avg_bits=3.0)
    assert out["avg_bits"] <= 3.0
    assert model.config.moe_compression["ops"][-1]["op"] == "quantize"
    assert model(**b).logits.isfinite().all()


def test_frequency_heuristic_lifts_the_most_used_experts_to_the_next_width() -> None:
    """QuantMoE-Bench at 3 bits: 2-bit experts, the most frequent half lifted to 4 bits."""
    model = tiny_moe("mixtral")
    stats = collect_routing_stats(model, [tiny_batch(model, batch=4, seq=16)])
    bits = allocate_bits(model, stats, avg_bits=3.0, allocation="frequency")
    assert all(set(widths) <= {2, 4} for widths in bits.values())
    flat = [b for v in bits.values() for b in v]
    assert sum(flat) / len(flat) == 3.0
    freq = torch.cat([stats[n].frequency for n in bits])
    lifted = torch.tensor(flat) == 4
    assert freq[lifted].min() >= freq[~lifted].max()
