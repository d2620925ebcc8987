"""One view over the expert layouts of transformers 5.x sparse-MoE models.

Every compression pass works through :class:`MoELayer`, so it never touches a model's tensors by name.
Two layout families are supported:

* **fused** — Mixtral, Qwen2-MoE (its shared expert is left alone), Qwen3-MoE, OLMoE: the block has a
  top-k router ``gate`` with ``weight (E, H)`` and an ``experts`` module holding two 3D parameters,
  ``gate_up_proj (E, 2I, H)`` (gate rows ``[:I]``, up rows ``[I:]``) and ``down_proj (E, H, I)``; the experts
  forward dispatches on ``config._experts_implementation`` (eager / batched_mm / grouped_mm).
* **switch** — Switch Transformers: a top-1 ``router.classifier`` ``Linear(H, E)`` and an ``nn.ModuleDict``
  ``expert_0 .. expert_{E-1}`` of ``wi: Linear(H, F)`` / ``wo: Linear(F, H)`` with ReLU.

Canonical expert weights: ``w_in (E, P, I, H)`` — P = 2 (gate, up) for SwiGLU, 1 for the plain MLP — and
``w_out (E, H, I)``. Neuron ``i`` of expert ``e`` is (``w_in[e, :, i]``, ``w_out[e, :, i]``).

A layer may route R router outputs onto E <= R physical experts through ``expert_map`` (R,), a buffer
on the experts module applied by a forward pre-hook: that is how merging removes experts while keeping
the router's choices (see research note: module sharing cannot be saved, and replacing the router object
after the first forward breaks ``output_router_logits``; we therefore mutate routers in place).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from moe.modeling import (
    MoEError,
    apply_expert,
    layer_kind,
    remap_fused,
    remap_switch,
    set_counts,
)
from moe.modeling import set_expert_map as _register_map

logger = logging.getLogger(__name__)

__all__ = [
    "MoEError",
    "MoELayer",
    "apply_expert",
    "check_layers",
    "count_expert_params",
    "expert_bytes",
    "find_moe_layers",
]


@dataclass
class MoELayer:
    """A view of one sparse-MoE block. Mutations go through its methods, which keep all counts in sync."""

    name: str  # module path of the block, e.g. "model.layers.0.mlp"
    index: int  # position among the model's MoE layers
    block: Any  # nn.Module; Any because the layouts' attributes are read dynamically
    router: Any
    experts: Any
    kind: Literal["fused", "switch"]
    config: Any  # the model config (shared by all layers)

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def gated(self) -> bool:
        """Fused SwiGLU experts (gate and up projections), not Switch ReLU MLPs."""
        return self.kind == "fused"

    @property
    def num_experts(self) -> int:
        """Physical experts."""
        return int(self.experts.num_experts)

    @property
    def num_routes(self) -> int:
        """Router outputs (>= num_experts when merged experts share a slot)."""
        return int(self.router_weight.shape[0])

    @property
    def hidden_size(self) -> int:
        """The model width H the router reads."""
        return int(self.router_weight.shape[1])

    @property
    def intermediate_size(self) -> int:
        """Hidden neurons per expert (read from the experts module when it says, which avoids
        dequantising packed or multiplying low-rank experts)."""
        if self.kind == "fused" and isinstance(
            getattr(self.experts, "intermediate_dim", None), int
        ):
            return int(self.experts.intermediate_dim)
        return int(self.get_weights()[1].shape[-1])

    @property
    def top_k(self) -> int:
        """Experts per token (1 for Switch)."""
        return int(getattr(self.router, "top_k", 1))

    @property
    def router_weight(self) -> nn.Parameter:
        """The router's weight (R, H); on the ``meta`` device when accelerate offloaded it (shapes are
        real; read values through :meth:`router_data`)."""
        if self.kind == "fused":
            return self.router.weight  # type: ignore[no-any-return]
        return self.router.classifier.weight  # type: ignore[no-any-return]

    def router_data(self) -> torch.Tensor:
        """The router's weight values, loaded from the offload store when accelerate offloaded it."""
        with resident(self.router):
            return self.router_weight.detach()

    @property
    def device(self) -> torch.device:
        """Where the layer computes: its weights' device, or accelerate's execution device."""
        return _execution_device(self.router) or self.router_weight.device

    @property
    def expert_map(self) -> torch.Tensor:
        """(R,) physical expert of each router output (identity when nothing was merged)."""
        emap = getattr(self.experts, "expert_map", None)
        if emap is None:
            return torch.arange(self.num_routes, device=self.device)
        return emap  # type: ignore[no-any-return]

    @property
    def has_expert_map(self) -> bool:
        """Whether merged experts share router outputs through an expert map."""
        return getattr(self.experts, "expert_map", None) is not None

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """The experts' activation function applied to ``x``."""
        if self.kind == "fused":
            return self.experts.act_fn(x)  # type: ignore[no-any-return]
        return self.experts["expert_0"].act(x)  # type: ignore[no-any-return]

    # -- weights ----------------------------------------------------------------------------------
    def get_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_in (E, P, I, H), w_out (E, H, I))``; views of the parameters for the fused layout."""
        if self.kind == "fused":
            if hasattr(self.experts, "dense"):  # LowRankExperts: reconstructed, not views
                gu, down = self.experts.dense()
            else:
                with resident(self.experts):  # loaded from the offload store when offloaded
                    gu, down = (
                        self.experts.gate_up_proj,
                        self.experts.down_proj,
                    )  # (E, 2I, H), (E, H, I)
            e, two_i, h = gu.shape
            return gu.view(e, 2, two_i // 2, h), down
        mods = [self.experts[f"expert_{i}"] for i in range(self.num_experts)]
        with resident(self.experts):
            w_in = torch.stack([m.wi.weight for m in mods])[:, None]  # (E, 1, F, H)
            w_out = torch.stack([m.wo.weight for m in mods])  # (E, H, F)
        return w_in, w_out

    def set_weights(self, w_in: torch.Tensor, w_out: torch.Tensor) -> None:
        """Replace all expert weights; the expert count and intermediate size may change."""
        e, p, i, h = w_in.shape
        if w_out.shape != (e, h, i) or h != self.hidden_size or p != (2 if self.gated else 1):
            raise MoEError(
                f"expert weights w_in {tuple(w_in.shape)} / w_out {tuple(w_out.shape)} do not fit "
                f"layer {self.name} (hidden {self.hidden_size}, P={2 if self.gated else 1})"
            )
        if hasattr(self.experts, "dense"):
            raise MoEError(
                f"layer {self.name} holds low-rank experts; change them before factoring"
            )
        w_in, w_out = w_in.detach().to(self.device), w_out.detach().to(self.device)
        stores = _disk_stores(self.experts)
        if not stores:
            own(self.experts)  # an offloaded experts module we cannot write back becomes resident
        if self.kind == "fused":
            dtype = self.experts.gate_up_proj.dtype
            self.experts.gate_up_proj = nn.Parameter(
                w_in.reshape(e, p * i, h).to(dtype).contiguous()
            )
            self.experts.down_proj = nn.Parameter(w_out.to(dtype).contiguous())
            self.experts.num_experts = e
            self.experts.intermediate_dim = i
            store_offloaded(stores)
            return
        dtype = self.experts["expert_0"].wi.weight.dtype
        template = self.experts["expert_0"]
        for k in list(self.experts.keys()):
            if int(k.split("_")[1]) >= e:
                del self.experts[k]
        for k in range(e):
            if f"expert_{k}" not in self.experts:
                self.experts[f"expert_{k}"] = copy.deepcopy(template)
            m = self.experts[f"expert_{k}"]
            m.wi.weight = nn.Parameter(w_in[k, 0].to(dtype).clone())
            m.wo.weight = nn.Parameter(w_out[k].to(dtype).clone())
            m.wi.out_features = m.wo.in_features = i
        self.experts.num_experts = e
        store_offloaded([m for m in stores if any(m is x for x in self.experts.modules())])

    # -- router -----------------------------------------------------------------------------------
    def slice_router(self, keep: Sequence[int]) -> None:
        """Keep router outputs ``keep`` (in that order), in place (the router object stays)."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.device)
        stores = _disk_stores(self.router)
        if not stores:
            own(self.router)
        lin = self.router if self.kind == "fused" else self.router.classifier
        with resident(self.router):  # read inside; write after (leaving it would reset to meta)
            weight = lin.weight.detach()[idx].clone()
            bias = None if getattr(lin, "bias", None) is None else lin.bias.detach()[idx].clone()
        lin.weight = nn.Parameter(weight)
        if bias is not None:
            lin.bias = nn.Parameter(bias)
        if self.kind == "switch":
            lin.out_features = len(idx)
        store_offloaded(stores)
        self.router.num_experts = len(idx)
        if self.kind == "fused" and hasattr(self.router, "top_k") and self.router.top_k > len(idx):
            raise MoEError(f"layer {self.name}: top_k={self.router.top_k} > {len(idx)} experts")

    def set_expert_map(self, emap: torch.Tensor | None) -> None:
        """Route router output r to physical expert ``emap[r]``; ``None`` removes the map."""
        hook = remap_fused if self.kind == "fused" else remap_switch
        if emap is None:
            if hasattr(self.experts, "expert_map"):
                del self.experts._buffers["expert_map"]
            for key, fn in list(self.experts._forward_pre_hooks.items()):
                if fn is hook:
                    del self.experts._forward_pre_hooks[key]
                    self.experts._forward_pre_hooks_with_kwargs.pop(key, None)
            return
        emap = torch.as_tensor(emap, dtype=torch.long, device=self.device)
        if emap.shape != (self.num_routes,) or int(emap.max()) >= self.num_experts:
            raise MoEError(
                f"expert_map of shape {tuple(emap.shape)} / max {int(emap.max())} does not fit layer "
                f"{self.name} ({self.num_routes} router outputs, {self.num_experts} experts)"
            )
        _register_map(self.experts, self.kind, emap)

    # -- computation (canonical weights; used by statistics, searches and tests) -----------------
    def expert_forward(self, e: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output (T, H) and intermediate activation (T, I) of physical expert ``e`` on x (T, H)."""
        w_in, w_out = self.get_weights()
        return apply_expert(self.act, w_in[e], w_out[e], x)

    # -- validation -------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of the router, expert weights and expert map (bytes and shapes): statistics and
        plans are bound to the exact weights they were computed on."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        with resident(self.router), resident(self.experts):
            tensors = [
                ("router", self.router_weight),
                *self.experts.named_parameters(),
                *self.experts.named_buffers(),
            ]
            for name, t in tensors:
                t = t.detach()
                h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def check_finite(self) -> None:
        """Raise :class:`MoEError` if a router or expert tensor holds NaN or inf."""
        with resident(self.router), resident(self.experts):
            tensors = [("router", self.router_weight), *self.experts.named_parameters()]
            for name, t in tensors:
                if t.is_floating_point() and not bool(t.isfinite().all()):
                    raise MoEError(
                        f"layer {self.name}: {name} holds NaN or inf values; fix or reload the "
                        "checkpoint before compressing (no layer was changed)"
                    )

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (T, R), top-k weights (T, k) and top-k router outputs (T, k) for x (T, H)."""
        if self.kind == "fused":
            logits, weights, idx = self.router(x)
            return logits, weights, idx
        logits = self.router.classifier(x.to(self.router_weight.dtype))
        probs = logits.softmax(-1)
        w, i = probs.max(-1, keepdim=True)
        return logits, w, i

    def moe_forward(
        self, x: torch.Tensor, *, route_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The routed part of the block on x (T, H), optionally with router outputs masked out
        (``route_mask`` (R,) bool, False = never selected, as NAEE's -inf logits). Ignores Switch's
        capacity limit and Qwen2's shared expert (neither depends on which experts exist)."""
        if self.kind == "fused":
            logits = nn.functional.linear(x, self.router_data())
        else:
            logits = self.router.classifier(x)
        if route_mask is not None:
            logits = logits.masked_fill(~route_mask, float("-inf"))
        probs = logits.float().softmax(-1)
        k = self.top_k
        w, idx = probs.topk(k, dim=-1)
        if self.kind == "fused" and getattr(self.router, "norm_topk_prob", True):
            w = w / w.sum(-1, keepdim=True)
        emap = self.expert_map[idx]
        out = torch.zeros_like(x)
        for e in emap.unique().tolist():
            tok, pos = torch.where(emap == e)
            y, _ = self.expert_forward(e, x[tok])
            out.index_add_(0, tok, y * w[tok, pos, None].to(y.dtype))
        return out


def _offloaded(module: nn.Module) -> list[nn.Module]:
    """``module`` and its submodules whose tensors accelerate keeps in an offload store."""
    return [m for m in module.modules() if getattr(getattr(m, "_hf_hook", None), "offload", False)]


def _execution_device(module: nn.Module) -> torch.device | None:
    for m in _offloaded(module):
        return torch.device(m._hf_hook.execution_device)  # type: ignore[union-attr,arg-type]
    return None


@contextlib.contextmanager
def resident(module: nn.Module) -> Iterator[None]:
    """Inside, an accelerate-offloaded ``module`` (CPU or disk offload: parameters on ``meta``) holds
    its real tensors, loaded one module at a time from the offload store; a no-op otherwise. Tensors
    taken inside stay valid after the block (the module itself returns to ``meta``)."""
    offloaded = _offloaded(module)
    if not offloaded:
        yield
        return
    from accelerate.utils import align_module_device

    with contextlib.ExitStack() as stack:
        for m in offloaded:
            stack.enter_context(align_module_device(m))
        yield


def own(module: nn.Module) -> None:
    """Make an accelerate-offloaded ``module`` resident for good: load its tensors, remove its hooks.
    A pass that writes new weights into a module calls this first (the hook would otherwise overwrite
    them with the offloaded originals at the next forward)."""
    offloaded = _offloaded(module)
    if not offloaded:
        return
    from accelerate.hooks import remove_hook_from_module

    for m in offloaded:
        with resident(m):
            params = {
                n: nn.Parameter(p.detach().clone(), p.requires_grad)
                for n, p in m.named_parameters(recurse=False)
            }
        remove_hook_from_module(m)
        for n, p in params.items():
            m._parameters[n] = p


def _disk_stores(module: nn.Module) -> list[nn.Module]:
    """Offloaded submodules whose accelerate store is a writable folder (disk offload), or [] when any
    offloaded submodule keeps its weights some other way."""
    mods = _offloaded(module)
    for m in mods:
        ds = getattr(m._hf_hook.weights_map, "dataset", None)  # type: ignore[union-attr]
        if getattr(ds, "save_folder", None) is None or not isinstance(
            getattr(ds, "index", None), dict
        ):
            return []
    return mods


def store_offloaded(mods: Sequence[nn.Module]) -> None:
    """Write the tensors a pass set on disk-offloaded modules into their offload folder (one safetensors
    file each, registered in the loader's index) and put the modules back on ``meta``: a compressed
    layer of an offloaded model stays on disk instead of becoming resident."""
    from safetensors.torch import save_file

    for m in mods:
        wm: Any = m._hf_hook.weights_map  # type: ignore[union-attr]
        ds: Any = wm.dataset
        prefix: str = wm.prefix
        for n, p in list(m.named_parameters(recurse=False)):
            if p.device.type == "meta":
                continue  # unchanged: still in the store
            key = prefix + n
            path = f"{ds.save_folder}/{key}.moe.safetensors"
            save_file({key: p.detach().cpu().contiguous()}, path)
            ds.index[key] = {
                "safetensors_file": path,
                "weight_name": key,
                "dtype": str(p.dtype).removeprefix("torch."),
            }
            m._parameters[n] = nn.Parameter(
                torch.empty(p.shape, dtype=p.dtype, device="meta"), p.requires_grad
            )


def check_layers(layers: Sequence[MoELayer], *, writable: bool = False) -> None:
    """Validate every layer before a pass changes any: finite router and expert weights, and with
    ``writable`` experts that are still plain weight tensors (not low-rank factors or packed codes)."""
    for layer in layers:
        layer.check_finite()
        if writable and hasattr(layer.experts, "dense"):
            raise MoEError(
                f"layer {layer.name} holds {type(layer.experts).__name__}; drop, merge, prune and "
                "quantise before factoring or packing (no layer was changed)"
            )


def find_moe_layers(model: nn.Module, *, required: bool = True) -> list[MoELayer]:
    """All sparse-MoE blocks of ``model`` in module order.

    Raises:
        MoEError: ``required`` and the model has no MoE block of a supported layout.
    """
    layers: list[MoELayer] = []
    config = getattr(model, "config", None)
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is None:
            continue
        router = module.gate if kind == "fused" else module.router
        layers.append(MoELayer(name, len(layers), module, router, module.experts, kind, config))  # type: ignore[arg-type]
    if required and not layers:
        raise MoEError(
            f"{type(model).__name__} has no sparse-MoE layer (looked for a block with 'experts' and a "
            "router 'gate' (Mixtral, Qwen2/3-MoE, OLMoE) or 'router' (Switch)); pass an MoE model"
        )
    return layers


def sync_config(model: nn.Module, layers: Sequence[MoELayer] | None = None) -> None:
    """Make the config's routed-expert count (and ``model.num_experts``) match the routers, and record
    every layer's physical experts (``config.moe_experts_per_layer``) and router outputs
    (``config.moe_routes_per_layer``), so the config agrees with every weight tensor.

    With non-uniform counts the config holds the largest (the per-layer counts live in the plan) and
    the load-balancing loss is switched off, since it assumes one count for every layer.
    """
    layers = find_moe_layers(model) if layers is None else layers
    set_counts(
        model,
        {layer.name: layer.num_routes for layer in layers},
        {layer.name: layer.num_experts for layer in layers},
    )


def count_expert_params(model: nn.Module) -> int:
    """Weights of the routed experts (router and shared experts excluded): parameter elements, or for
    packed low-bit experts the weights they encode."""
    total = 0
    for layer in find_moe_layers(model):
        encoded = getattr(layer.experts, "num_weights", None)
        total += (
            encoded() if callable(encoded) else sum(p.numel() for p in layer.experts.parameters())
        )
    return total


def expert_bytes(model: nn.Module) -> int:
    """The one byte counter: bytes of every tensor storage held by the routed experts modules
    (parameters and buffers, shared storage counted once) — the resident memory of the experts as
    loaded, measured from the tensors, not computed from nominal bit widths."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for layer in find_moe_layers(model):
        for t in [*layer.experts.parameters(), *layer.experts.buffers()]:
            st = t.untyped_storage()
            key = (t.device.type, st.data_ptr())
            if key not in seen:
                seen.add(key)
                total += st.nbytes()
    return total
