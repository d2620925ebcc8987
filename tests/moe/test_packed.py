"""Packed low-bit experts: bit packing, exact agreement with fake quantisation, measured bytes, reload."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from moe.checkpoint import load_compressed, save_compressed, tensor_bytes_on_disk
from moe.experts import PackedExperts, dequantize_groups, pack_bits, quantize_groups, unpack_bits
from moe.layers import expert_bytes, find_moe_layers
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_planes_round_trip_and_take_b_bits_per_code(bits: int) -> None:
    n = 1000 + bits  # not a multiple of 8
    q = torch.randint(
        0, 2**bits, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(bits)
    )
    codes = pack_bits(q, bits)
    assert codes.dtype == torch.uint8 and codes.shape == (bits, math.ceil(n / 8))
    assert torch.equal(unpack_bits(codes, n), q)
    # bit j of code i sits in plane j, byte i // 8, position i % 8 (independent decoding)
    i, j = 517, bits - 1
    assert (int(codes[j, i // 8]) >> (i % 8)) & 1 == (int(q[i]) >> j) & 1


def test_group_quantisation_error_is_at_most_half_a_step() -> None:
    w = torch.randn(6, 64)
    q, scale, lo = quantize_groups(w, 3, 32)
    assert int(q.max()) <= 7 and scale.dtype == lo.dtype == torch.float16 and scale.shape == (6, 2)
    err = (dequantize_groups(q, scale, lo) - w).abs().reshape(6, 2, 32).amax(-1)
    assert (err <= scale.float() / 2 + 1e-3).all()


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_packed_forward_equals_fake_quantisation_and_bytes_are_measured(family: str) -> None:
    model = tiny_moe(family)
    batches = [tiny_batch(model, batch=2, seq=12, seed=i) for i in range(2)]
    stats = collect_routing_stats(model, batches)
    fp32 = expert_bytes(model)
    fake, packed = copy.deepcopy(model), copy.deepcopy(model)
    quantize_experts(
        fake,
        collect_routing_stats(fake, batches),
        avg_bits=3.0,
        allocation="uniform",
        storage="fake",
    )
    out = quantize_experts(packed, stats, avg_bits=3.0, allocation="uniform")
    assert all(isinstance(layer.experts, PackedExperts) for layer in find_moe_layers(packed))
    assert expert_bytes(fake) == fp32  # fake quantisation saves nothing
    for b in batches:
        torch.testing.assert_close(packed(**b).logits, fake(**b).logits, atol=2e-5, rtol=0)
    # independent count: 3 bit planes of ceil(N/8) bytes + fp16 scale and minimum per 32 weights
    layers = find_moe_layers(model)
    per = 0
    for layer in layers:
        h, i = layer.hidden_size, layer.intermediate_size
        for n_w in (2 * i * h, h * i):
            per += layer.num_experts * (3 * math.ceil(n_w / 8) + 2 * 2 * n_w // 32)
    assert out["bytes"] == expert_bytes(packed) == per
    assert expert_bytes(packed) / fp32 == pytest.approx(0.125)


def test_packed_model_saves_and_reloads_packed(tmp_path) -> None:
    model = tiny_moe("mixtral")
    batches = [tiny_batch(model, seed=i) for i in range(2)]
    ref = copy.deepcopy(model)
    save_compressed(ref, tmp_path / "fp32")
    quantize_experts(
        model, collect_routing_stats(model, batches), avg_bits=3.0, allocation="sensitivity"
    )
    save_compressed(model, tmp_path / "q")
    again = load_compressed(tmp_path / "q")
    assert all(isinstance(layer.experts, PackedExperts) for layer in find_moe_layers(again))
    assert torch.equal(again(**batches[0]).logits, model(**batches[0]).logits)
    disk = {k: v for k, v in tensor_bytes_on_disk(tmp_path / "q").items() if ".experts." in k}
    disk32 = {k: v for k, v in tensor_bytes_on_disk(tmp_path / "fp32").items() if ".experts." in k}
    assert sum(disk.values()) == expert_bytes(again)
    assert sum(disk.values()) <= 0.13 * sum(disk32.values())
    assert all(
        v.dtype in (torch.uint8, torch.float16)
        for k, v in again.state_dict().items()
        if "_codes_" in k or "_scale_" in k
    )


def test_a_truncated_or_garbled_folder_is_a_moe_error(tmp_path) -> None:
    from moe.layers import MoEError

    model = tiny_moe("mixtral")
    save_compressed(model, tmp_path / "m")
    data = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(data[: len(data) // 2])  # interrupted copy
    with pytest.raises(MoEError, match="not a readable safetensors file"):
        load_compressed(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(MoEError, match="cannot read"):
        load_compressed(tmp_path / "m")
