"""Expert modules that replace the stock fused experts: low-rank factors and packed low-bit codes.

Both keep the transformers experts call signature ``(hidden (T, H), top_k_index (T, k),
top_k_weights (T, k)) -> (T, H)`` and expose ``dense()`` (the canonical weights, for the passes that
read them) and are rebuilt from a compression plan by :mod:`moe.plan`.

**Packed low-bit storage** (:class:`PackedExperts`): each expert's matrices are quantised with
group-wise asymmetric min-max scales, groups of ``g`` consecutive input weights per output row:

    s = (max − min) / (2^b − 1) and m = min, both stored as fp16;  q = clamp(round((w − m) / s), 0, 2^b − 1);
    ŵ = q · s + m,

and the b-bit codes are stored as ``b`` bit planes of ``ceil(N / 8)`` bytes (bit ``j`` of 8 consecutive
codes per byte), so any width 1..8 costs exactly b bits per weight plus 32 bits of scale and minimum per
group (at b = 3, g = 32: 4 bits per weight, 1/8 of fp32). The forward dequantises only the experts a
batch routes to, one at a time (CPU or GPU; no low-bit kernel), so resident memory is the codes and
scales. :func:`fake_quantize` is the same rounding kept in floating point (the "fake quantisation"
ablation); packed and fake forwards agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from moe.layers import MoEError, MoELayer, apply_expert

__all__ = [
    "LowRankExperts",
    "PackedExperts",
    "dequantize_groups",
    "fake_quantize",
    "pack_bits",
    "quantize_groups",
    "unpack_bits",
]

_PLANES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``q`` (N,) uint8 in [0, 2^bits) -> (bits, ceil(N / 8)) uint8 bit planes."""
    n = q.numel()
    pad = (-n) % 8
    q = torch.nn.functional.pad(q.reshape(-1), (0, pad)).view(-1, 8)  # (N8, 8)
    planes = [((q >> j) & 1) * _PLANES.to(q.device) for j in range(bits)]
    return torch.stack([p.sum(-1, dtype=torch.int32).to(torch.uint8) for p in planes])


def unpack_bits(codes: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: (bits, ceil(n / 8)) uint8 -> (n,) uint8 codes."""
    shifts = torch.arange(8, dtype=torch.uint8, device=codes.device)
    q = torch.zeros(codes.shape[1], 8, dtype=torch.uint8, device=codes.device)
    for j in range(codes.shape[0]):
        q |= ((codes[j, :, None] >> shifts) & 1) << j
    return q.reshape(-1)[:n]


def _group(n_in: int, group_size: int) -> int:
    return group_size if n_in % group_size == 0 else n_in


def quantize_groups(
    w: torch.Tensor, bits: int, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w (..., out, in)`` -> codes (same shape, uint8), fp16 scales and minima (..., out, in / g)."""
    if not 1 <= bits <= 8:
        raise MoEError(f"bits={bits}: packed storage holds 1..8 bits per weight")
    g = _group(w.shape[-1], group_size)
    x = w.detach().reshape(*w.shape[:-1], w.shape[-1] // g, g).float()
    lo = x.amin(-1).half()
    scale = ((x.amax(-1) - lo.float()) / (2**bits - 1)).clamp_min(1e-7).half()
    q = torch.round((x - lo.float()[..., None]) / scale.float()[..., None]).clamp_(0, 2**bits - 1)
    return q.to(torch.uint8).reshape(w.shape), scale, lo


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """``ŵ = q · s + m`` per group (float32), inverse of :func:`quantize_groups` up to rounding."""
    n_groups = scale.shape[-1]
    x = q.reshape(*q.shape[:-1], n_groups, -1).float()
    return (x * scale.float()[..., None] + lo.float()[..., None]).reshape(q.shape)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int = 32) -> torch.Tensor:
    """Round ``w (..., out, in)`` to ``bits`` bits and keep it in ``w``'s dtype (the ablation)."""
    if bits >= 16:
        return w.clone()
    return dequantize_groups(*quantize_groups(w, bits, group_size)).to(w.dtype)


class PackedExperts(nn.Module):
    """Fused SwiGLU experts stored as packed b-bit codes with fp16 group scales (module docstring).

    Buffers per expert e and matrix m in (gate_up (2I, H), down (H, I)): ``{m}_codes_{e}`` uint8
    (b_e, ceil(N / 8)), ``{m}_scale_{e}`` and ``{m}_min_{e}`` fp16 (rows, in / g).
    """

    def __init__(
        self,
        config: Any,
        hidden: int,
        intermediate: int,
        bits: Sequence[int],
        group_size: int,
        act_fn: nn.Module,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_experts = len(bits)
        self.hidden_dim = hidden
        self.intermediate_dim = intermediate
        self.bits = [int(b) for b in bits]
        self.group_size = group_size
        self.act_fn = act_fn
        for e, b in enumerate(self.bits):
            for m, (rows, cols) in self._shapes().items():
                n_groups = cols // _group(cols, group_size)
                self.register_buffer(
                    f"{m}_codes_{e}", torch.zeros(b, -(-rows * cols // 8), dtype=torch.uint8)
                )
                self.register_buffer(
                    f"{m}_scale_{e}", torch.zeros(rows, n_groups, dtype=torch.float16)
                )
                self.register_buffer(
                    f"{m}_min_{e}", torch.zeros(rows, n_groups, dtype=torch.float16)
                )

    def _shapes(self) -> dict[str, tuple[int, int]]:
        i, h = self.intermediate_dim, self.hidden_dim
        return {"gate_up": (2 * i, h), "down": (h, i)}

    @classmethod
    def install(cls, layer: MoELayer, bits: Sequence[int], group_size: int) -> PackedExperts:
        """Replace ``layer``'s fused experts by packed codes of its current weights."""
        w_in, w_out = layer.get_weights()
        e, _, i, h = w_in.shape
        old = layer.experts
        new = cls(layer.config, h, i, bits, group_size, old.act_fn).to(w_in.device)
        with torch.no_grad():
            for k, b in enumerate(new.bits):
                for m, w in (("gate_up", w_in[k].reshape(2 * i, h)), ("down", w_out[k])):
                    q, scale, lo = quantize_groups(w, b, group_size)
                    getattr(new, f"{m}_codes_{k}").copy_(pack_bits(q.reshape(-1), b))
                    getattr(new, f"{m}_scale_{k}").copy_(scale)
                    getattr(new, f"{m}_min_{k}").copy_(lo)
        emap = getattr(old, "expert_map", None)
        layer.block.experts = new
        layer.experts = new
        if emap is not None:
            layer.set_expert_map(emap)
        return new

    def expert_weights(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised ``(gate_up (2I, H), down (H, I))`` of expert ``e`` (float32)."""
        out = []
        for m, (rows, cols) in self._shapes().items():
            q = unpack_bits(getattr(self, f"{m}_codes_{e}"), rows * cols).view(rows, cols)
            out.append(
                dequantize_groups(q, getattr(self, f"{m}_scale_{e}"), getattr(self, f"{m}_min_{e}"))
            )
        return out[0], out[1]

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate_up (E, 2I, H), down (E, H, I))`` dequantised."""
        pairs = [self.expert_weights(e) for e in range(self.num_experts)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def num_weights(self) -> int:
        return self.num_experts * 3 * self.intermediate_dim * self.hidden_dim

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        i, h = self.intermediate_dim, self.hidden_dim
        for e in top_k_index.unique().tolist():
            tok, pos = torch.where(top_k_index == e)
            gu, down = (w.to(hidden_states.dtype) for w in self.expert_weights(e))
            y, _ = apply_expert(self.act_fn, gu.view(2, i, h), down, hidden_states[tok])
            out.index_add_(0, tok, (y * top_k_weights[tok, pos, None]).to(out.dtype))
        return out


class LowRankExperts(nn.Module):
    """Fused SwiGLU experts whose matrices are rank-r products: ``W = A @ B``.

    ``gate_up_a (E, 2I, r)``, ``gate_up_b (E, r, H)``, ``down_a (E, H, r)``, ``down_b (E, r, I)``.
    Same call signature as the transformers experts module: ``(hidden (T, H), top_k_index (T, k),
    top_k_weights (T, k)) -> (T, H)``; follows ``config._experts_implementation`` (grouped_mm or eager).
    """

    def __init__(
        self,
        config: Any,
        num_experts: int,
        hidden: int,
        intermediate: int,
        rank: int,
        act_fn: nn.Module,
    ) -> None:
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
                for w, a, b in (
                    (w_in[k].reshape(2 * i, h), new.gate_up_a, new.gate_up_b),
                    (w_out[k], new.down_a, new.down_b),
                ):
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
