"""CUDA: every pass's output runs under eager, grouped_mm and batched_mm and they agree (fp32, bf16).

Run on a GPU machine with: ``python -m pytest -q tests/moe/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from moe.compress import compress_experts
from moe.drop import drop_experts
from moe.merge import merge_experts
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe

pytestmark = pytest.mark.gpu


def _passes(model, batches):
    """Apply the passes one by one, yielding the name of the pass just applied."""
    yield "original"
    drop_experts(model, collect_routing_stats(model, batches), num_experts=7, criterion="exact")
    yield "dropped"
    budget = {"model.layers.0.mlp": 3, "model.layers.1.mlp": 5}
    merge_experts(model, collect_routing_stats(model, batches), num_experts=budget)
    yield "merged"
    compress_experts(model, collect_routing_stats(model, batches), keep_ratio=0.45)  # 64 -> 32
    yield "pruned"
    quantize_experts(model, collect_routing_stats(model, batches), avg_bits=3.0)
    yield "quantised"
    compress_experts(model, collect_routing_stats(model, batches), rank=8)
    yield "low-rank"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_implementations_agree_after_every_pass(dtype: torch.dtype, tol: float) -> None:
    model = tiny_moe("mixtral", intermediate=64).cuda()
    batches = [
        {k: v.cuda() for k, v in tiny_batch(model, batch=4, seq=32, seed=i).items()}
        for i in range(2)
    ]
    for stage in _passes(model, batches):
        model.to(dtype)
        outs = {}
        for impl in ("eager", "grouped_mm", "batched_mm"):
            model.set_experts_implementation(impl)
            with torch.no_grad():
                outs[impl] = model(**batches[0]).logits.float()
        for impl, y in outs.items():
            diff = float((y - outs["eager"]).abs().max())
            assert diff <= tol, f"{stage}: {impl} differs from eager by {diff}"
        model.float()
        model.set_experts_implementation("grouped_mm")
