"""Passes on a checkpoint that accelerate offloads to disk (forced with ``max_memory``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moe.checkpoint import load_moe_checkpoint
from moe.drop import drop_experts
from moe.layers import find_moe_layers
from moe.merge import merge_experts
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


def _pair(tmp_path: Path, family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    tiny_moe(family, vocab=256).save_pretrained(tmp_path / "m")
    ref = load_moe_checkpoint(tmp_path / "m")
    off = load_moe_checkpoint(
        tmp_path / "m",
        device_map="auto",
        max_memory={"cpu": "100KB"},
        offload_folder=str(tmp_path / "offload"),
    )
    layers = find_moe_layers(off)
    assert all(layer.router_weight.device.type == "meta" for layer in layers)  # really offloaded
    return ref, off


@pytest.mark.parametrize("family", ["mixtral", pytest.param("switch", marks=pytest.mark.slow)])
def test_statistics_and_drop_on_an_offloaded_model_match_the_resident_one(
    family: str, tmp_path: Path
) -> None:
    ref, off = _pair(tmp_path, family)
    batches = [tiny_batch(ref, seed=i) for i in range(2)]
    s_ref, s_off = collect_routing_stats(ref, batches), collect_routing_stats(off, batches)
    for name, s in s_ref.layers.items():
        assert s.fingerprint == s_off[name].fingerprint
        assert torch.equal(s.counts, s_off[name].counts)
        torch.testing.assert_close(s.gram, s_off[name].gram)
    drop_experts(ref, s_ref, num_experts=6, criterion="saliency")
    drop_experts(off, s_off, num_experts=6, criterion="saliency")
    torch.testing.assert_close(off(**batches[0]).logits, ref(**batches[0]).logits)


def test_merge_and_packed_quantisation_on_an_offloaded_model(tmp_path: Path) -> None:
    ref, off = _pair(tmp_path, "mixtral")
    batches = [tiny_batch(ref, seed=i) for i in range(2)]
    for model in (ref, off):
        merge_experts(model, collect_routing_stats(model, batches), num_experts=4)
        quantize_experts(model, collect_routing_stats(model, batches), avg_bits=3.0)
    torch.testing.assert_close(off(**batches[0]).logits, ref(**batches[0]).logits)
    # the untouched parts stay offloaded
    assert off.model.embed_tokens.weight.device.type == "meta"


@pytest.mark.parametrize("family", ["mixtral", pytest.param("switch", marks=pytest.mark.slow)])
def test_merged_and_dropped_layers_are_written_back_to_the_offload_folder(
    family: str, tmp_path: Path
) -> None:
    ref, off = _pair(tmp_path, family)
    batches = [tiny_batch(ref, seed=i) for i in range(2)]
    for model in (ref, off):
        drop_experts(model, collect_routing_stats(model, batches), num_experts=6)
        merge_experts(model, collect_routing_stats(model, batches), num_experts=3)
    for layer in find_moe_layers(off):  # still offloaded, with the new shapes
        assert layer.router_weight.device.type == "meta" and layer.num_routes == 6
        assert all(p.device.type == "meta" for p in layer.experts.parameters())
        assert layer.num_experts == 3 and layer.get_weights()[0].shape[0] == 3
    assert list((tmp_path / "offload").glob("*.moe.safetensors"))
    torch.testing.assert_close(off(**batches[0]).logits, ref(**batches[0]).logits)
