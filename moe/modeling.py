"""Loading code for qhybrid's compressed MoE checkpoints — written into every folder it saves.

A compressed model (merged experts behind an ``expert_map``, different expert counts per layer,
low-rank factors, packed low-bit codes) is not a stock transformers architecture. So that no loader
can silently fill it with random weights, :func:`moe.plan.save_compressed` writes a folder that

* has ``model_type = "qhybrid_moe"`` and an ``auto_map`` naming this file (copied into the folder as
  ``modeling_qhybrid_moe.py``): ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)``
  (``AutoModelForSeq2SeqLM`` for Switch) runs :func:`load_folder` below and returns the family's stock
  model class with the plan's structure and the saved weights — the same code and the same logits as
  ``moe.load_compressed(folder)``; without ``trust_remote_code`` transformers refuses the folder;
* holds ``vocab_size`` as a string that names ``moe.load_compressed``, so a family class used directly
  (``MixtralForCausalLM.from_pretrained(folder)``) or any tool that reads the config as a stock config
  fails on the config's field validation instead of loading random experts.

This module imports only torch, transformers and safetensors (it must run where qhybrid is not
installed). It holds what the loader needs and the package shares: the expert forward
(:func:`apply_expert`), the expert-map hooks, packed low-bit storage (:class:`PackedExperts`),
low-rank experts (:class:`LowRankExperts`), the plan's shape check (:func:`check_plan`) and the
structure builder (:func:`build_structure`).

**Packed low-bit storage**: each expert's matrices are quantised with group-wise asymmetric min-max
scales, groups of ``g`` consecutive input weights per output row:

    s = (max − min) / (2^b − 1) and m = min, both stored as fp16;  q = clamp(round((w − m) / s), 0, 2^b − 1);
    ŵ = q · s + m,

and the b-bit codes are stored as ``b`` bit planes of ``ceil(N / 8)`` bytes (bit ``j`` of 8 consecutive
codes per byte), so any width 1..8 costs exactly b bits per weight plus 32 bits of scale and minimum per
group (at b = 3, g = 32: 4 bits per weight, 1/8 of fp32). The forward dequantises only the experts a
batch routes to, one at a time (no low-bit kernel), so resident memory is the codes and scales.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # inside qhybrid its error class; standalone (in a checkpoint folder) a plain ValueError
    from qhybrid.errors import QHybridError as _ErrorBase
except ImportError:  # pragma: no cover - exercised only where qhybrid is not installed
    _ErrorBase = ValueError  # type: ignore[misc,assignment]

MODEL_TYPE = "qhybrid_moe"
MODELING_FILE = "modeling_qhybrid_moe.py"
LOAD_HINT = (
    "this folder holds a qhybrid compressed MoE model: load it with moe.load_compressed(path) or "
    "AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True) (Switch: AutoModelForSeq2SeqLM)"
)
# Config attributes that hold the routed-expert count, per model family.
CONFIG_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
_HUB_KWARGS = {"cache_dir", "force_download", "local_files_only", "proxies", "revision", "token",
               "subfolder", "trust_remote_code", "code_revision", "_from_auto", "_commit_hash",
               "adapter_kwargs", "use_safetensors"}  # fmt: skip


class MoEError(_ErrorBase):
    """A model, budget, plan or folder that the MoE passes or the loader cannot work with."""


# -- the expert forward and the expert-map hooks ------------------------------------------------------
def apply_expert(
    act: Callable[[torch.Tensor], torch.Tensor],
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one expert forward: ``h = act(x W_gateᵀ) ⊙ (x W_upᵀ)`` (P = 2) or ``act(x W_inᵀ)`` (P = 1),
    ``y = h W_outᵀ``, for ``w_in (P, I, H)``, ``w_out (H, I)`` and x (T, H); returns (y, h)."""
    h = act(x @ w_in[0].T)
    if w_in.shape[0] == 2:
        h = h * (x @ w_in[1].T)
    return h @ w_out.T, h


def remap_fused(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Forward pre-hook: ``top_k_index`` (T, k) of router outputs -> physical expert ids."""
    emap = module.expert_map
    if len(args) >= 2:
        args = (args[0], emap[args[1]], *args[2:])
    elif "top_k_index" in kwargs:
        kwargs = {**kwargs, "top_k_index": emap[kwargs["top_k_index"]]}
    return args, kwargs


def remap_switch(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Forward pre-hook for Switch: one-hot dispatch (T, 1, R) -> (T, 1, E) via the (R, E) map."""
    emap = module.expert_map
    dispatch = args[1]
    onehot = nn.functional.one_hot(emap, num_classes=module.num_experts).to(dispatch.dtype)
    new = torch.einsum("tkr,re->tke", dispatch, onehot)
    return (args[0], new, *args[2:]), kwargs


def set_expert_map(experts: nn.Module, kind: str, emap: torch.Tensor) -> None:
    """Register ``emap`` (R,) as the persistent buffer ``expert_map`` and its remapping hook."""
    hook = remap_fused if kind == "fused" else remap_switch
    experts.register_buffer("expert_map", emap.clone())
    if hook not in experts._forward_pre_hooks.values():
        experts.register_forward_pre_hook(hook, with_kwargs=True)


def layer_kind(module: Any) -> str | None:
    """``"fused"`` (Mixtral, Qwen2/3-MoE, OLMoE), ``"switch"`` or None for a module that is no MoE block."""
    experts = getattr(module, "experts", None)
    if experts is None:
        return None
    if (hasattr(experts, "gate_up_proj") or hasattr(experts, "dense")) and hasattr(module, "gate"):
        if getattr(experts, "is_transposed", False) or getattr(experts, "has_bias", False):
            raise MoEError(
                f"{type(experts).__name__} stores experts transposed or with biases (GPT-OSS layout), "
                "which qhybrid.moe does not support yet; use Mixtral, Qwen2/3-MoE, OLMoE or Switch models"
            )
        if not getattr(experts, "is_concatenated", True):
            raise MoEError(f"{type(experts).__name__} interleaves gate/up rows; not supported")
        return "fused"
    if isinstance(experts, nn.ModuleDict) and hasattr(
        getattr(module, "router", None), "classifier"
    ):
        return "switch"
    return None


def set_counts(model: nn.Module, routes: dict[str, int], experts: dict[str, int]) -> None:
    """Make the config's routed-expert count keys (and the aux-loss ``num_experts``) the largest
    router width, record each layer's physical experts and router outputs in
    ``config.moe_experts_per_layer`` / ``config.moe_routes_per_layer``, and switch the
    load-balancing loss off when counts differ between layers (it assumes one count)."""
    count = max(routes.values())
    config: Any = model.config
    for key in CONFIG_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, count)
    for mod in model.modules():
        if all(
            hasattr(mod, a) for a in ("num_experts", "num_experts_per_tok", "router_aux_loss_coef")
        ):
            setattr(mod, "num_experts", count)  # noqa: B010 (nn.Module attribute typing)
    if len(set(routes.values())) > 1:
        config.output_router_logits = False
    config.moe_experts_per_layer = dict(experts)
    config.moe_routes_per_layer = dict(routes)


# -- packed low-bit codes -----------------------------------------------------------------------------
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


def check_group_size(n_in: int, group_size: int, what: str = "expert matrix") -> int:
    """``group_size`` if it divides the input width ``n_in``, else a :class:`MoEError` naming the fix."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise MoEError(f"group_size={group_size!r} must be a positive integer")
    if n_in % group_size:
        fits = [g for g in (8, 16, 32, 64, 128, 256) if n_in % g == 0]
        raise MoEError(
            f"group_size={group_size} does not divide the input width {n_in} of the {what}; choose a "
            f"divisor of {n_in} (e.g. {fits or [n_in]})"
        )
    return group_size


def quantize_groups(
    w: torch.Tensor, bits: int, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w (..., out, in)`` -> codes (same shape, uint8), fp16 scales and minima (..., out, in / g)."""
    if not 1 <= bits <= 8:
        raise MoEError(f"bits={bits}: packed storage holds 1..8 bits per weight")
    g = check_group_size(w.shape[-1], group_size)
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


def _replace_experts(layer: Any, new: nn.Module) -> None:
    """Put ``new`` in place of ``layer``'s experts module, keeping its expert map."""
    emap = getattr(layer.experts, "expert_map", None)
    layer.block.experts = new
    layer.experts = new
    if emap is not None:
        layer.set_expert_map(emap)


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
                n_groups = cols // check_group_size(cols, group_size)
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
    def install(cls, layer: Any, bits: Sequence[int], group_size: int) -> PackedExperts:
        """Replace ``layer``'s (a :class:`moe.layers.MoELayer`) fused experts by packed codes of its
        current weights."""
        w_in, w_out = layer.get_weights()
        e, _, i, h = w_in.shape
        new = cls(layer.config, h, i, bits, group_size, layer.experts.act_fn).to(w_in.device)
        with torch.no_grad():
            for k, b in enumerate(new.bits):
                for m, w in (("gate_up", w_in[k].reshape(2 * i, h)), ("down", w_out[k])):
                    q, scale, lo = quantize_groups(w, b, group_size)
                    getattr(new, f"{m}_codes_{k}").copy_(pack_bits(q.reshape(-1), b))
                    getattr(new, f"{m}_scale_{k}").copy_(scale)
                    getattr(new, f"{m}_min_{k}").copy_(lo)
        _replace_experts(layer, new)
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
        """Weights the packed experts stand for (what they would hold in float)."""
        return self.num_experts * 3 * self.intermediate_dim * self.hidden_dim

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """The routed experts' weighted outputs, each dequantised only when a token routes to it."""
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
    def install(cls, layer: Any, rank: int) -> LowRankExperts:
        """Replace ``layer``'s experts by rank-``rank`` SVD factors of its current weights."""
        w_in, w_out = layer.get_weights()
        e, _, i, h = w_in.shape
        new = cls(layer.config, e, h, i, rank, layer.experts.act_fn).to(w_in.device, w_in.dtype)
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
        _replace_experts(layer, new)
        return new

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate_up (E, 2I, H), down (E, H, I))`` reconstructed."""
        return self.gate_up_a @ self.gate_up_b, self.down_a @ self.down_b

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """The routed experts' weighted outputs through the rank-r factors (grouped or eager)."""
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


# -- the compression plan: shapes, checked op by op ---------------------------------------------------
@dataclass
class Shape:
    """What a layer looks like while a plan is checked: router outputs, experts, widths, storage."""

    routes: int
    experts: int
    intermediate: int
    hidden: int
    gated: bool
    merged: bool
    frozen: str = ""  # "low_rank" / "quantize" once the experts are no plain tensors
    expert_map: list[int] = field(default_factory=list)
    rank: int = 0
    bits: list[int] = field(default_factory=list)
    group_size: int = 0


def moe_blocks(model: nn.Module) -> list[tuple[str, Any, str]]:
    """``(module path, block, kind)`` of every supported sparse-MoE block, in module order."""
    out = []
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None:
            out.append((name, module, kind))
    return out


def block_shape(block: Any, kind: str) -> Shape:
    """The current :class:`Shape` of a block (plain fused or Switch experts)."""
    experts = block.experts
    emap = getattr(experts, "expert_map", None)
    if kind == "fused":
        routes, hidden = block.gate.weight.shape
        e, inter = int(experts.num_experts), int(experts.down_proj.shape[-1])
    else:
        routes, hidden = block.router.classifier.weight.shape
        e, inter = len(experts), int(experts["expert_0"].wi.weight.shape[0])
    return Shape(int(routes), e, inter, int(hidden), kind == "fused", emap is not None,
                 expert_map=[] if emap is None else emap.tolist())  # fmt: skip


def _int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise MoEError(f"plan op field {what}={value!r} must be a list of integers")
    return value


def _check_structure(shape: Shape, op: dict[str, Any], name: str) -> None:
    """Drop, merge and prune: check against ``shape`` and update it."""
    kind = op["op"]
    if kind == "drop":
        keep = _int_list(op.get("keep"), "keep")
        if (
            shape.merged
            or not keep
            or len(set(keep)) != len(keep)
            or min(keep) < 0
            or max(keep) >= shape.routes
        ):
            raise MoEError(
                f"plan op drop {keep} does not fit layer {name} ({shape.routes} experts)"
            )
        shape.routes = shape.experts = len(keep)
    elif kind == "merge":
        emap = _int_list(op.get("expert_map"), "expert_map")
        if (
            shape.merged
            or len(emap) != shape.routes
            or min(emap) < 0
            or set(emap) != set(range(max(emap) + 1))
        ):
            raise MoEError(
                f"plan op merge of {len(emap)} routes does not fit layer {name} ({shape.routes})"
            )
        shape.experts, shape.merged, shape.expert_map = max(emap) + 1, True, list(emap)
    else:
        i = op.get("intermediate")
        if not isinstance(i, int) or not 1 <= i <= shape.intermediate or not shape.gated:
            raise MoEError(f"plan op prune to {i!r} neurons does not fit layer {name}")
        shape.intermediate = i


def check_op(shape: Shape, op: dict[str, Any], name: str) -> None:
    """Check one op against the layer's current shape and update the shape (nothing is changed)."""
    kind = op.get("op")
    if kind in ("drop", "merge", "prune", "low_rank") and shape.frozen:
        raise MoEError(
            f"plan op {kind} on layer {name} follows {shape.frozen}, which no pass allows"
        )
    if kind in ("drop", "merge", "prune"):
        _check_structure(shape, op, name)
    elif kind == "low_rank":
        rank = op.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or not shape.gated:
            raise MoEError(f"plan op low_rank {rank!r} does not fit layer {name}")
        shape.frozen, shape.rank = "low_rank", rank
    elif kind == "quantize":
        bits = _int_list(op.get("bits"), "bits")
        packed = op.get("storage", "fake") == "packed"
        if (
            len(bits) != shape.experts
            or shape.frozen
            or (packed and (not shape.gated or not all(1 <= b <= 8 for b in bits)))
        ):
            raise MoEError(
                f"plan op quantize with bits {bits} does not fit layer {name} ({shape.experts} experts)"
            )
        if packed:
            g = op.get("group_size")
            if not isinstance(g, int) or isinstance(g, bool):
                raise MoEError(f"plan op quantize on layer {name} has group_size={g!r}")
            check_group_size(shape.hidden, g, f"layer {name} experts")
            check_group_size(shape.intermediate, g, f"layer {name} experts")
            shape.frozen, shape.bits, shape.group_size = "quantize", list(bits), g
    else:
        raise MoEError(f"unknown plan op {kind!r}; this file was written by a newer qhybrid")


def check_plan(model: nn.Module, plan: Any) -> dict[str, Shape]:
    """Every layer's final :class:`Shape` after ``plan`` on ``model`` (a fresh base model); raises
    :class:`MoEError` unless every op fits."""
    if not isinstance(plan, dict) or not isinstance(plan.get("ops", []), list):
        raise MoEError(f"a compression plan is a dict with a list 'ops'; got {type(plan).__name__}")
    base = plan.get("base", {})
    config: Any = model.config
    for key, have in (
        ("model_type", getattr(config, "model_type", None)),
        ("architecture", type(model).__name__),
    ):
        want = base.get(key)
        if want is not None and want != have:
            raise MoEError(
                f"the plan is for {key} {want!r} but the model is {have!r}; load it with its own model"
            )
    for key in set(CONFIG_COUNT_KEYS) & set(base):
        if getattr(config, key, None) != base[key]:
            raise MoEError(
                f"the plan starts from {key}={base[key]} but the model has {getattr(config, key, None)}"
            )
    blocks = moe_blocks(model)
    shapes = {name: block_shape(block, kind) for name, block, kind in blocks}
    for op in plan.get("ops", []):
        name = op.get("layer") if isinstance(op, dict) else None
        if name not in shapes:
            raise MoEError(
                f"plan names layer {name!r}, which this model does not have ({list(shapes)})"
            )
        check_op(shapes[name], op, name)
    return shapes


def _empty(*shape: int, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape, dtype=like.dtype, device=like.device))


def _shape_block(block: Any, kind: str, s: Shape) -> None:
    """Give ``block`` the router, experts and expert map of ``s`` (placeholder values, loaded later)."""
    if kind == "fused":
        block.gate.weight = _empty(s.routes, s.hidden, like=block.gate.weight)
        block.gate.num_experts = s.routes
        old = block.experts
        if s.frozen == "quantize":
            new: Any = PackedExperts(
                old.config, s.hidden, s.intermediate, s.bits, s.group_size, old.act_fn
            )
        elif s.frozen == "low_rank":
            new = LowRankExperts(
                old.config, s.experts, s.hidden, s.intermediate, s.rank, old.act_fn
            )
        else:
            like = old.gate_up_proj
            old.gate_up_proj = _empty(s.experts, 2 * s.intermediate, s.hidden, like=like)
            old.down_proj = _empty(s.experts, s.hidden, s.intermediate, like=like)
            old.num_experts, old.intermediate_dim, new = s.experts, s.intermediate, old
        block.experts = new
    else:
        lin = block.router.classifier
        lin.weight = _empty(s.routes, s.hidden, like=lin.weight)
        if lin.bias is not None:
            lin.bias = _empty(s.routes, like=lin.bias)
        lin.out_features = block.router.num_experts = s.routes
        experts, template = block.experts, block.experts["expert_0"]
        for k in list(experts.keys()):
            del experts[k]
        for k in range(s.experts):
            m = copy.deepcopy(template)
            m.wi.weight = _empty(s.intermediate, s.hidden, like=template.wi.weight)
            m.wo.weight = _empty(s.hidden, s.intermediate, like=template.wo.weight)
            m.wi.out_features = m.wo.in_features = s.intermediate
            experts[f"expert_{k}"] = m
        experts.num_experts = s.experts
    if s.merged:
        set_expert_map(block.experts, kind, torch.tensor(s.expert_map, dtype=torch.long))


def build_structure(model: nn.Module, plan: dict[str, Any]) -> None:
    """Reshape ``model`` (a fresh base model) into the plan's final structure, with placeholder weights
    to be overwritten by the saved ones; the whole plan is checked first, so a plan that does not fit
    leaves the model unchanged."""
    shapes = check_plan(model, plan)
    for name, block, kind in moe_blocks(model):
        _shape_block(block, kind, shapes[name])
    model.config.moe_compression = copy.deepcopy(plan)  # type: ignore[union-attr]
    set_counts(
        model, {n: s.routes for n, s in shapes.items()}, {n: s.experts for n, s in shapes.items()}
    )


# -- the folder ---------------------------------------------------------------------------------------
def _file(path: str | Path, name: str) -> Path:
    """``path/name`` for a local folder, else the hub's cached copy of it."""
    if Path(path).is_dir():
        return Path(path) / name
    from transformers.utils import cached_file

    found = cached_file(str(path), name)
    if found is None:
        raise MoEError(f"'{path}' has no {name}")
    return Path(found)


def read_folder_config(path: str | Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict, or a :class:`MoEError` naming the file."""
    file = _file(path, "config.json")
    try:
        d = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MoEError(f"cannot read {file}: {err}") from err
    if not isinstance(d, dict) or "model_type" not in d:
        raise MoEError(f"{file} holds no model_type; it is not a model config")
    return d


def base_model(path: str | Path, d: dict[str, Any]) -> nn.Module:
    """The stock family model (placeholder weights) a compressed folder's config describes."""
    import transformers

    if d.get("model_type") == MODEL_TYPE:
        base = d.get("base_config")
        model_type = d.get("base_model_type")
    else:  # folders of qhybrid before 2026-12: the family's config with the plan inside
        base, model_type = d, d.get("model_type")
    if not isinstance(base, dict) or not isinstance(model_type, str):
        raise MoEError(f"{path}/config.json has no base_config and base_model_type")
    kwargs = {k: v for k, v in base.items() if k not in ("model_type", "moe_compression")}
    try:
        config = transformers.AutoConfig.for_model(model_type, **kwargs)
    except (ValueError, KeyError, TypeError) as err:
        raise MoEError(f"{path}/config.json is not a valid {model_type} config: {err}") from err
    arch = (base.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    if cls is None or getattr(cls, "config_class", None) is not type(config):
        raise MoEError(f"architecture {arch!r} in {path}/config.json is not a {model_type} model")
    return cls(config)  # type: ignore[no-any-return]


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
        with safe_open(str(file), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (OSError, ValueError, SafetensorError) as err:
        raise MoEError(f"{file} is not a readable safetensors file: {err}") from err
    for k, src in aliases.items():
        if src not in state:
            raise MoEError(f"{file} names alias {k} -> {src}, which it does not hold")
        state[k] = state[src]
    return state


def _cast(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters to ``dtype``; packed codes and fp16 scales stay as they are."""
    for module in model.modules():
        if isinstance(module, PackedExperts):
            continue
        for name, p in module.named_parameters(recurse=False):
            if p.is_floating_point():
                setattr(module, name, nn.Parameter(p.detach().to(dtype), p.requires_grad))


def load_folder(
    path: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The model saved in ``path`` by ``moe.save_compressed``, equal to the saved one: the base model
    is built from the config, reshaped by the plan (:func:`build_structure`) and the weights are loaded
    strictly, in the dtypes they were saved in (``dtype`` casts the float parameters afterwards)."""
    d = read_folder_config(path)
    model = base_model(path, d)
    build_structure(model, d.get("moe_compression") or {"base": {}, "ops": []})
    file = _file(path, "model.safetensors")
    state = _read_weights(file)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise MoEError(f"the weights in {file} do not match the plan: {err}") from err
    if missing or unexpected:
        raise MoEError(
            f"the weights in {file} do not match the plan: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()  # type: ignore[operator]
    if dtype not in (None, "auto"):
        _cast(model, getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.to(device or "cpu").eval()


def _from_pretrained(path: str | Path, kwargs: dict[str, Any]) -> nn.Module:
    dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
    device = kwargs.pop("device_map", None)
    kwargs.pop("config", None)
    unknown = sorted(set(kwargs) - _HUB_KWARGS)
    if unknown:
        raise MoEError(
            f"from_pretrained of a qhybrid compressed MoE folder does not take {unknown}"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None and not isinstance(device, (str, torch.device)):
        raise MoEError(f"device_map={device!r}: a compressed MoE folder loads onto one device")
    return load_folder(path, dtype=dtype, device=device)


try:  # the transformers entry points (auto_map); absent only where transformers is not installed
    from transformers import PretrainedConfig
except ImportError:  # pragma: no cover
    PretrainedConfig = object  # type: ignore[misc,assignment]


class QHybridMoeConfig(PretrainedConfig):  # type: ignore[misc,valid-type]
    """The wrapper config of a compressed folder: ``base_config`` (the family's config) and the plan."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any) -> None:
        self.base_config = kwargs.pop("base_config", None)
        self.moe_compression = kwargs.pop("moe_compression", None)
        super().__init__(**kwargs)


class QHybridMoeForCausalLM(nn.Module):
    """``from_pretrained`` returns the family's stock model class with the plan replayed and the
    saved weights (:func:`load_folder`); ``dtype`` and a single-device ``device_map`` are honoured."""

    config_class = QHybridMoeConfig

    @classmethod
    def from_pretrained(cls, path: str | Path, *args: Any, **kwargs: Any) -> nn.Module:
        """The stock model with the plan replayed and the saved weights (class docstring)."""
        if args:
            raise MoEError(
                "from_pretrained of a qhybrid compressed MoE folder takes no positional args"
            )
        return _from_pretrained(path, kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class: Any = None) -> None:
        """Nothing to register: the folder's ``auto_map`` names this class already."""
        return None


class QHybridMoeForSeq2SeqLM(QHybridMoeForCausalLM):
    """The same loader for Switch Transformers folders (``AutoModelForSeq2SeqLM``)."""
