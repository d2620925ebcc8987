"""Every folder a pass writes loads correctly wherever a user loads it, or fails loudly.

For every family and every pass: the folder written by :func:`moe.checkpoint.save_result` (what
``qhybrid moe compress`` writes) is loaded by ``moe.load_compressed`` and by stock transformers
(``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM``, and the family class directly). A stock folder
must give ``load_compressed``'s logits through every stock loader; a compressed folder must make every
stock loader without ``trust_remote_code`` raise (the family class with a message naming
``moe.load_compressed``) and give ``load_compressed``'s logits with ``trust_remote_code=True`` — the
code copied into the folder, not the package's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from moe.checkpoint import FAMILIES, bytes_by_part, load_compressed, save_result
from moe.compress import compress_experts
from moe.drop import drop_experts
from moe.merge import merge_experts
from moe.modeling import MODEL_TYPE
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe

TINY = {"mixtral": "mixtral", "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe", "olmoe": "olmoe",
        "switch_transformers": "switch"}  # fmt: skip


def _stats(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> Any:
    return collect_routing_stats(model, batches, max_cached_tokens=512)


PASSES: dict[str, Callable[[torch.nn.Module, Any], object]] = {
    "drop": lambda m, b: drop_experts(m, _stats(m, b), num_experts=6),
    "drop non-uniform": lambda m, b: drop_experts(m, _stats(m, b), num_experts=5, budget="global"),
    "merge": lambda m, b: merge_experts(m, _stats(m, b), num_experts=4),
    "prune": lambda m, b: compress_experts(m, _stats(m, b), keep_ratio=0.5),
    "low rank": lambda m, b: compress_experts(m, _stats(m, b), rank=8),
    "packed 3 bits": lambda m, b: quantize_experts(m, _stats(m, b), avg_bits=3.0),
    "fake 3 bits": lambda m, b: quantize_experts(m, _stats(m, b), avg_bits=3.0, storage="fake"),
    "merge + packed": lambda m, b: (
        merge_experts(m, _stats(m, b), num_experts=3),
        quantize_experts(m, _stats(m, b), avg_bits=2.5),
    ),
}  # fmt: skip
FUSED_ONLY = {"prune", "low rank", "packed 3 bits", "merge + packed"}
FAST = {"mixtral", "switch_transformers"}  # the other families run every pass under --runslow
CASES = [
    (family, name)
    if family in FAST or name in ("drop", "merge + packed")
    else pytest.param(family, name, marks=pytest.mark.slow)
    for family in FAMILIES
    for name in PASSES
    if family != "switch_transformers" or name not in FUSED_ONLY
]


def _auto(family: str) -> Any:
    import transformers

    if family == "switch_transformers":
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits  # type: ignore[no-any-return]


@pytest.mark.parametrize(("family", "name"), CASES)
def test_every_family_and_pass_loads_the_same_or_fails_loudly(
    family: str, name: str, tmp_path: Path
) -> None:
    import transformers

    model = tiny_moe(TINY[family])
    batches = [tiny_batch(model, batch=2, seq=12, seed=i) for i in range(2)]
    PASSES[name](model, batches)
    out, _ = save_result(model, tmp_path / "out")
    ref = _logits(load_compressed(out), batches[0])
    torch.testing.assert_close(ref, _logits(model, batches[0]), atol=0, rtol=0)
    family_cls = getattr(transformers, FAMILIES[family])
    if json.loads((out / "config.json").read_text())["model_type"] != MODEL_TYPE:  # stock folder
        for loader in (_auto(family).from_pretrained, family_cls.from_pretrained):
            stock, info = loader(out, output_loading_info=True)
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
            torch.testing.assert_close(_logits(stock.eval(), batches[0]), ref, atol=0, rtol=0)
        return
    assert name not in ("drop", "prune", "fake 3 bits")  # these stay stock architectures
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        _auto(family).from_pretrained(out, trust_remote_code=False)
    with pytest.raises(Exception, match="moe.load_compressed"):
        family_cls.from_pretrained(out)
    remote = _auto(family).from_pretrained(out, trust_remote_code=True)
    assert type(remote) is family_cls and type(remote).__module__.startswith("transformers.")
    torch.testing.assert_close(_logits(remote, batches[0]), ref, atol=0, rtol=0)


def test_the_remote_loader_is_the_copied_file_and_honours_dtype(tmp_path: Path) -> None:
    import transformers

    from moe.experts import PackedExperts
    from moe.layers import find_moe_layers

    model = tiny_moe("qwen3_moe")
    batches = [tiny_batch(model, seed=i) for i in range(2)]
    PASSES["merge + packed"](model, batches)
    out, how = save_result(model, tmp_path / "out", dtype=torch.bfloat16)
    assert "trust_remote_code" in how and (out / "modeling_qhybrid_moe.py").is_file()
    remote = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    experts = find_moe_layers(remote)[0].experts
    # the experts class comes from the folder's copy of the loader, not from the qhybrid package
    assert type(experts).__name__ == "PackedExperts" and not isinstance(experts, PackedExperts)
    assert {p.dtype for p in remote.parameters()} == {torch.bfloat16}
    assert {experts.gate_up_scale_0.dtype, experts.gate_up_codes_0.dtype} == {
        torch.float16,
        torch.uint8,
    }
    ours = load_compressed(out)
    torch.testing.assert_close(
        _logits(remote, batches[0]), _logits(ours, batches[0]), atol=0, rtol=0
    )
    as32 = transformers.AutoModelForCausalLM.from_pretrained(
        out, trust_remote_code=True, dtype=torch.float32
    )
    assert {p.dtype for p in as32.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="quantization_config"):
        transformers.AutoModelForCausalLM.from_pretrained(
            out, trust_remote_code=True, quantization_config={}
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_users_dtype_is_kept_and_non_expert_bytes_do_not_grow(
    dtype: torch.dtype, tmp_path: Path
) -> None:
    model = tiny_moe("mixtral", vocab=256).to(dtype)
    model.save_pretrained(tmp_path / "in")
    work = tiny_moe("mixtral", vocab=256).to(dtype).float()  # the passes compute in fp32
    batches = [tiny_batch(work, seed=i) for i in range(2)]
    PASSES["merge + packed"](work, batches)
    out, _ = save_result(work, tmp_path / "out", dtype=dtype)
    before, after = bytes_by_part(tmp_path / "in"), bytes_by_part(out)
    for part in ("attention", "embeddings and head", "norms"):
        assert after[part] == before[part] > 0, part
    assert after["routers"] == before["routers"]  # the routers keep their rows (expert map)
    assert after["routed experts"] < before["routed experts"] / 4
    from moe.checkpoint import safetensors_header

    header = safetensors_header(out / "model.safetensors")
    assert all(
        v["dtype"] == {torch.bfloat16: "BF16", torch.float16: "F16"}[dtype]
        for k, v in header.items()
        if ".experts." not in k and not k.endswith("expert_map")
    )
