"""Routing statistics against an independent computation from ``output_router_logits``."""

from __future__ import annotations

import torch

from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


def test_stats_match_router_logits_and_mask_padding() -> None:
    model = tiny_moe("mixtral")
    batch = tiny_batch(model, batch=3, seq=10, pad=4)
    stats = collect_routing_stats(model, [batch])
    out = model(**batch, output_router_logits=True)
    keep = batch["attention_mask"].flatten().bool()
    for i, name in enumerate(stats.layers):
        s = stats[name]
        logits = out.router_logits[i].double()[keep]  # (T, E) real tokens only
        assert s.tokens == int(keep.sum()) == 26
        torch.testing.assert_close(s.gram, logits.T @ logits)
        top = logits.softmax(-1).topk(2, dim=-1)
        sel = torch.zeros_like(logits).scatter_(1, top.indices, 1.0)
        torch.testing.assert_close(s.counts, sel.sum(0))
        torch.testing.assert_close(s.co_selection, sel.T @ sel)
        w = top.values / top.values.sum(-1, keepdim=True)
        torch.testing.assert_close(
            s.weighted_counts, torch.zeros_like(logits).scatter_(1, top.indices, w).sum(0)
        )
        cos = torch.nn.functional.cosine_similarity(logits.T[:, None], logits.T[None], dim=-1)
        torch.testing.assert_close(s.logit_cosine(), cos)
        assert s.counts.sum() == 2 * s.tokens


def test_memory_is_independent_of_token_count() -> None:
    model = tiny_moe("olmoe")
    batches = [tiny_batch(model, seed=i) for i in range(6)]
    one = collect_routing_stats(model, batches[:1], max_cached_tokens=8)
    many = collect_routing_stats(model, batches, max_cached_tokens=8)
    for name in one.layers:
        assert one[name].nbytes() == many[name].nbytes()
        assert many[name].tokens == 6 * one[name].tokens


def test_switch_encoder_and_decoder_masks() -> None:
    model = tiny_moe("switch")
    batch = tiny_batch(model, pad=5)
    stats = collect_routing_stats(model, [batch])
    assert {s.tokens for s in stats.layers.values()} == {2 * 12 - 5}
    for s in stats.layers.values():
        assert s.counts.sum() == s.tokens  # top-1
        assert (s.activation_entropy() >= 0).all()
