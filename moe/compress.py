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

import copy
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from moe.layers import MoEError, MoELayer, find_moe_layers
from moe.plan import record
from moe.stats import RoutingStats

logger = logging.getLogger(__name__)

__all__ = ["LowRankExperts", "compress_experts", "distill", "round_up"]


def round_up(n: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


class LowRankExperts(nn.Module):
    """Fused SwiGLU experts whose matrices are rank-r products: ``W = A @ B``.

    ``gate_up_a (E, 2I, r)``, ``gate_up_b (E, r, H)``, ``down_a (E, H, r)``, ``down_b (E, r, I)``.
    Same call signature as the transformers experts module: ``(hidden (T, H), top_k_index (T, k),
    top_k_weights (T, k)) -> (T, H)``; follows ``config._experts_implementation`` (grouped_mm or eager).
    """

    def __init__(self, config: Any, num_experts: int, hidden: int, intermediate: int, rank: int,
                 act_fn: nn.Module) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.num_experts = num_experts
        self.hidden_dim = hidden
        self.intermediate_dim = intermediate
        self.rank = rank
        self.act_fn = act_fn
        e = num_experts
        self.gate_up_a = nn.Parameter(torch.zeros(e, 2 * intermediate, rank))
        self.gate_up_b = nn.Parameter(torch.zeros(e, rank, hidden))
        self.down_a = nn.Parameter(torch.zeros(e, hidden, rank))
        self.down_b = nn.Parameter(torch.zeros(e, rank, intermediate))

    @classmethod
    def install(cls, layer: MoELayer, rank: int) -> LowRankExperts:
        """Replace ``layer``'s experts by rank-``rank`` SVD factors of its current weights."""
        w_in, w_out = layer.get_weights()
        e, _, i, h = w_in.shape
        old = layer.experts
        new = cls(layer.config, e, h, i, rank, old.act_fn).to(w_in.device, w_in.dtype)
        with torch.no_grad():
            for k in range(e):
                for w, a, b in ((w_in[k].reshape(2 * i, h), new.gate_up_a, new.gate_up_b),
                                (w_out[k], new.down_a, new.down_b)):  # fmt: skip
                    u, sv, vh = torch.linalg.svd(w.double(), full_matrices=False)
                    r = min(rank, sv.numel())
                    root = sv[:r].sqrt()
                    a[k].zero_()
                    b[k].zero_()
                    a[k, :, :r] = (u[:, :r] * root).to(a.dtype)
                    b[k, :r] = (root[:, None] * vh[:r]).to(b.dtype)
        emap = getattr(old, "expert_map", None)
        layer.block.experts = new
        layer.experts = new
        if emap is not None:
            layer.set_expert_map(emap)
        return new

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate_up (E, 2I, H), down (E, H, I))`` reconstructed."""
        return self.gate_up_a @ self.gate_up_b, self.down_a @ self.down_b

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        impl = getattr(self.config, "_experts_implementation", "eager")
        if impl == "grouped_mm":
            return self._grouped(hidden_states, top_k_index, top_k_weights)
        out = torch.zeros_like(hidden_states)
        for e in top_k_index.unique().tolist():
            tok, pos = torch.where(top_k_index == e)
            x = hidden_states[tok]
            gu = (x @ self.gate_up_b[e].T) @ self.gate_up_a[e].T
            g, u = gu.chunk(2, dim=-1)
            y = ((self.act_fn(g) * u) @ self.down_b[e].T) @ self.down_a[e].T
            out.index_add_(0, tok, (y * top_k_weights[tok, pos, None]).to(out.dtype))
        return out

    def _grouped(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        from transformers.integrations.moe import _grouped_linear

        k = top_k_index.size(-1)
        t, h = hidden_states.shape
        ids = top_k_index.reshape(-1)
        ids_sorted, perm = torch.sort(ids)
        x = hidden_states[perm // k]
        hist_in = ids_sorted.float() if ids.device.type in ("cpu", "mps") else ids_sorted.int()
        counts = torch.histc(hist_in, bins=self.num_experts, min=0, max=self.num_experts - 1)
        offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
        z = _grouped_linear(x, self.gate_up_b, offs)  # (S, r)
        g, u = _grouped_linear(z, self.gate_up_a, offs).chunk(2, dim=-1)  # (S, I) each
        z = _grouped_linear(self.act_fn(g) * u, self.down_b, offs)  # (S, r)
        y = _grouped_linear(z, self.down_a, offs)  # (S, H)
        y = y * top_k_weights.reshape(-1)[perm].unsqueeze(-1).to(y.dtype)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        return y[inv].view(t, k, h).sum(1).to(hidden_states.dtype)


def compress_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    keep_ratio: float = 1.0,
    rank: int | None = None,
    multiple: int = 8,
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
    layers = find_moe_layers(model)
    stats.check(layers)
    if not 0 < keep_ratio <= 1:
        raise MoEError(f"keep_ratio={keep_ratio} must lie in (0, 1]")
    if rank is not None and rank < 1:
        raise MoEError(f"rank={rank} must be >= 1 or None")
    if multiple < 1:
        raise MoEError(f"multiple={multiple} must be >= 1")
    for layer in layers:
        if not layer.gated or isinstance(layer.experts, LowRankExperts):
            raise MoEError(
                f"compress_experts needs fused SwiGLU experts at full rank; layer {layer.name} is "
                f"{'already low-rank' if layer.gated else 'a Switch layer'}"
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
    steps: int = 200,
    lr: float = 1e-3,
    temperature: float = 2.0,
    ce_weight: float = 0.0,
    trainable: Literal["experts", "all_but_router"] = "experts",
    seed: int = 0,
    device: str = "cpu",
) -> Any:
    """Knowledge distillation from ``teacher`` into ``student`` (routers frozen), via qhybrid.train.

    Loss: ``distillation_loss(student, teacher, T, mask=attention_mask) + ce_weight · CE(labels)``.
    Returns the :class:`qhybrid.train.TrainResult`.
    """
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

    cfg = TrainConfig(max_steps=steps, lr_schedule="cosine", warmup_steps=min(10, steps // 10),
                      log_every=max(1, steps // 10), seed=seed, device=device, progress=False)  # fmt: skip
    student.train()
    try:
        result = train(student, list(batches), loss_fn, torch.optim.AdamW(params, lr=lr), cfg)
    finally:
        student.eval()
        for p in student.parameters():
            p.requires_grad_(True)
    return result


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy (hooks and buffers included) to keep as the teacher."""
    return copy.deepcopy(model)
