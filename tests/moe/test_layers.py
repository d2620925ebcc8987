"""The layer view matches each family's own forward, and its surgery keeps the model runnable."""

from __future__ import annotations

import pytest
import torch

from moe.layers import MoEError, find_moe_layers, sync_config
from moe.tiny import FAMILIES, tiny_batch, tiny_moe


def _routed_reference(layer, x):  # the block's own forward minus Qwen2's shared expert
    out = layer.block(x[None])[0]
    if hasattr(layer.block, "shared_expert"):
        out = out - torch.sigmoid(layer.block.shared_expert_gate(x)) * layer.block.shared_expert(x)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_view_matches_block_forward(family: str) -> None:
    model = tiny_moe(family)
    layers = find_moe_layers(model)
    assert len(layers) == (4 if family == "switch" else 2)
    x = torch.randn(16, 32)
    for layer in layers:
        assert (layer.num_experts, layer.num_routes, layer.intermediate_size) == (8, 8, 64)
        w_in, w_out = layer.get_weights()
        assert w_in.shape == (8, 2 if layer.gated else 1, 64, 32) and w_out.shape == (8, 32, 64)
        torch.testing.assert_close(
            layer.moe_forward(x), _routed_reference(layer, x), atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_slice_and_remap_keep_model_consistent(family: str) -> None:
    model = tiny_moe(family)
    batch = tiny_batch(model)
    for layer in find_moe_layers(model):
        w_in, w_out = layer.get_weights()
        keep = [0, 2, 3, 5, 7, 6]
        layer.slice_router(keep)
        layer.set_weights(w_in[keep], w_out[keep])
        assert layer.num_experts == layer.num_routes == 6
        # now fold 6 routes onto 3 experts
        layer.set_weights(w_in[:3], w_out[:3])
        layer.set_expert_map(torch.tensor([0, 0, 1, 1, 2, 2]))
        assert layer.num_experts == 3 and layer.num_routes == 6
    sync_config(model)
    assert model(**batch).logits.isfinite().all()


def test_remap_equals_masked_routing() -> None:
    """Experts 2k and 2k+1 made identical, then folded: the function must not change."""
    model = tiny_moe("mixtral")
    batch = tiny_batch(model)
    for layer in find_moe_layers(model):
        w_in, w_out = layer.get_weights()
        w_in, w_out = w_in.clone(), w_out.clone()
        w_in[1::2], w_out[1::2] = w_in[0::2], w_out[0::2]
        layer.set_weights(w_in, w_out)
    before = model(**batch).logits
    for layer in find_moe_layers(model):
        w_in, w_out = layer.get_weights()
        layer.set_weights(w_in[0::2].clone(), w_out[0::2].clone())
        layer.set_expert_map(torch.arange(8) // 2)
    after = model(**batch).logits
    assert (before - after).abs().max() < 1e-6


def test_no_moe_layers_is_a_clear_error() -> None:
    with pytest.raises(MoEError, match="no sparse-MoE layer"):
        find_moe_layers(torch.nn.Linear(3, 3))
