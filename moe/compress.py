"""Expert compression after merging: structured neuron pruning plus low-rank factors, and distillation.

MC-SMoE's C-SMoE (arXiv 2310.01334, §3.3) decomposes merged experts into low-rank and structurally
sparse parts. We keep both parts in shapes the fast ``grouped_mm`` experts path accepts:

* **Structured sparsity** (``keep_ratio``): each expert keeps its ``I'`` most important hidden neurons,
  importance ``s_i = E[h_i²] · ‖w_out[:, i]‖²`` (the expected squared contribution of neuron i to the
  output, from :class:`~moe.stats.LayerStats` ``act_sq``). ``I'`` is one count per layer, rounded up to a
  multiple of ``multiple`` (8: ``grouped_mm`` needs ``I' × itemsize % 16 == 0`` for bf16 and fp32), so
  the experts stay two fused 3D tensors.
* **Low rank** (``rank``): each expert matrix W is replaced by its truncated SVD ``U_r Σ_r V_rᵀ`` stored
  as two factors; :class:`LowRankExperts` runs them as four grouped matmuls (or an eager loop),
  with ``r`` rounded to a multiple of ``multiple`` too.

:func:`distill` then recovers accuracy with a short knowledge-distillation run from the uncompressed
teacher through :func:`qhybrid.train.train` and :func:`qhybrid.train.distillation_loss`, routers
frozen (as the anchor does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from moe.experts import LowRankExperts
from moe.layers import MoEError, check_layers, find_moe_layers
from moe.plan import record
from moe.stats import RoutingStats
from moe.values import Count, KeepRatio, NonNegative, Positive, Seed, check_options

logger = logging.getLogger(__name__)

__all__ = ["LowRankExperts", "compress_experts", "distill", "round_up"]


Trainable = Literal["experts", "all_but_router"]  # what distillation trains (routers: never)


def round_up(n: float, multiple: int) -> int:
    """The smallest positive multiple of ``multiple`` that is at least ``n``."""
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


def compress_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    keep_ratio: KeepRatio = 1.0,
    rank: Count | None = None,
    multiple: Count = 8,
) -> dict[str, Any]:
    """Prune hidden neurons to ``keep_ratio`` and/or factor experts to rank ``rank``, in place.

    Args:
        model: a fused-layout MoE model (merged or not); ``stats`` collected on it as it is now.
        stats: routing statistics (``act_sq`` gives neuron importance).
        keep_ratio: share of hidden neurons kept per expert, in (0, 1]; rounded up to ``multiple``.
        rank: rank of every expert matrix after pruning, rounded up to ``multiple``; None = full rank.
        multiple: size granularity that keeps ``grouped_mm`` applicable (8 for bf16/fp32).

    Returns:
        ``{"intermediate": {layer: I'}, "rank": {layer: r}}``.
    """
    check_options(compress_experts, locals())
    layers = find_moe_layers(model)
    check_layers(layers, writable=True)
    stats.check(layers)
    for layer in layers:
        if not layer.gated:
            raise MoEError(
                f"compress_experts needs fused SwiGLU experts; layer {layer.name} is a Switch layer"
            )
    out: dict[str, Any] = {"intermediate": {}, "rank": {}}
    ops: list[dict[str, Any]] = []
    with torch.no_grad():
        for layer in layers:
            s = stats[layer.name]
            w_in, w_out = layer.get_weights()
            i = w_in.shape[2]
            keep = min(i, round_up(keep_ratio * i, multiple)) if keep_ratio < 1 else i
            if keep < i:
                score = s.act_sq.to(w_out.device) * w_out.double().pow(2).sum(1)  # (E, I)
                idx = score.topk(keep, dim=1).indices.sort(dim=1).values  # (E, I')
                new_in = torch.stack([w_in[e][:, idx[e]] for e in range(w_in.shape[0])])
                new_out = torch.stack([w_out[e][:, idx[e]] for e in range(w_out.shape[0])])
                layer.set_weights(new_in.clone(), new_out.clone())
                ops.append({"op": "prune", "layer": layer.name, "intermediate": keep})
            out["intermediate"][layer.name] = keep
            if rank is not None:
                r = round_up(rank, multiple)
                if r < min(keep, layer.hidden_size):
                    LowRankExperts.install(layer, r)
                    ops.append({"op": "low_rank", "layer": layer.name, "rank": r})
                out["rank"][layer.name] = r
    record(model, ops)
    return out


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    steps: Count = 200,
    lr: Positive = 1e-3,
    temperature: Positive = 2.0,
    ce_weight: NonNegative = 0.0,
    trainable: Trainable = "experts",
    seed: Seed = 0,
    device: str = "cpu",
) -> Any:
    """Knowledge distillation from ``teacher`` into ``student`` (routers frozen), via qhybrid.train.

    Loss: ``distillation_loss(student, teacher, T, mask=attention_mask) + ce_weight · CE(labels)``.
    Returns the :class:`qhybrid.train.TrainResult`.
    """
    check_options(distill, locals(), skip=("student", "teacher", "batches", "device"))
    from qhybrid.train import TrainConfig, distillation_loss, train

    layers = find_moe_layers(student)
    router_params = {id(p) for layer in layers for p in layer.router.parameters()}
    expert_params = {id(p) for layer in layers for p in layer.experts.parameters()}
    params = []
    for p in student.parameters():
        use = id(p) in expert_params if trainable == "experts" else id(p) not in router_params
        p.requires_grad_(use)
        if use:
            params.append(p)
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t_logits = teacher(**inputs).logits
        s_logits = model(**inputs).logits
        mask = batch.get("attention_mask")
        loss = distillation_loss(s_logits, t_logits, temperature=temperature, mask=mask)
        if ce_weight and "labels" in batch:
            ce = nn.functional.cross_entropy(
                s_logits[:, :-1].reshape(-1, s_logits.shape[-1]),
                batch["labels"][:, 1:].reshape(-1),
                ignore_index=-100,
            )
            loss = loss + ce_weight * ce
        return loss

    cfg = TrainConfig(
        max_steps=steps,
        lr_schedule="cosine",
        warmup_steps=min(10, steps // 10),
        log_every=max(1, steps // 10),
        seed=seed,
        device=device,
        progress=False,
    )
    student.train()
    try:
        result = train(student, list(batches), loss_fn, torch.optim.AdamW(params, lr=lr), cfg)
    finally:
        student.eval()
        for p in student.parameters():
            p.requires_grad_(True)
    return result
