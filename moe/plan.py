"""The compression plan: what every pass did to the model's structure, saved with the weights.

Each pass appends an operation to ``model.config.moe_compression = {"base": {...}, "ops": [...]}``:

* ``{"op": "drop", "layer": name, "keep": [router outputs kept, in order]}``
* ``{"op": "merge", "layer": name, "expert_map": [R ints], "groups": [[experts]...]}``
* ``{"op": "prune", "layer": name, "intermediate": I'}`` (kept neurons per expert)
* ``{"op": "low_rank", "layer": name, "rank": r}``
* ``{"op": "quantize", "layer": name, "bits": [per expert], "group_size": g}``

:func:`save_compressed` writes ``config.json`` (with the plan), ``model.safetensors`` and
``moe_plan.json``. :func:`load_compressed` builds the stock model from the config with the *base*
expert counts, replays the plan's structural surgery (with the weights about to be overwritten) and loads
the weights ``strict=True``. Stock ``from_pretrained`` cannot do this: the config holds one expert
count for every layer, so non-uniform layers and expert maps would not reload.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe.layers import _CONFIG_COUNT_KEYS, MoEError, MoELayer, find_moe_layers, sync_config
from qhybrid.runs import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["apply_structure", "get_plan", "load_compressed", "record", "replay", "save_compressed"]


def get_plan(model: nn.Module) -> dict[str, Any]:
    """The model's plan (a fresh empty one when no pass has run)."""
    plan = getattr(model.config, "moe_compression", None)  # type: ignore[union-attr]
    if plan is None:
        return {"base": _base_snapshot(model), "ops": []}
    return copy.deepcopy(plan)  # type: ignore[no-any-return]


def _base_snapshot(model: nn.Module) -> dict[str, Any]:
    config = model.config  # type: ignore[union-attr]
    return {
        k: getattr(config, k)
        for k in _CONFIG_COUNT_KEYS
        if isinstance(getattr(config, k, None), int)
    }


def record(model: nn.Module, ops: list[dict[str, Any]]) -> None:
    """Append ``ops`` to the model's plan and resync the config's expert counts."""
    plan = get_plan(model)
    plan["ops"].extend(ops)
    model.config.moe_compression = plan  # type: ignore[union-attr]
    sync_config(model)


def apply_structure(layer: MoELayer, op: dict[str, Any]) -> None:
    """Reshape ``layer`` as ``op`` did, keeping whatever weights fit (the caller loads the real ones)."""
    from moe.compress import LowRankExperts

    kind = op["op"]
    w_in, w_out = layer.get_weights()
    if kind == "drop":
        keep = list(op["keep"])
        if layer.has_expert_map or max(keep) >= layer.num_routes:
            raise MoEError(f"plan op drop {keep} does not fit layer {layer.name}")
        layer.slice_router(keep)
        layer.set_weights(w_in[keep], w_out[keep])
    elif kind == "merge":
        emap = torch.tensor(op["expert_map"])
        g = int(emap.max()) + 1
        if emap.numel() != layer.num_routes or g > layer.num_experts:
            raise MoEError(
                f"plan op merge of {emap.numel()} routes does not fit layer {layer.name}"
            )
        layer.set_weights(w_in[:g], w_out[:g])
        layer.set_expert_map(emap)
    elif kind == "prune":
        i = int(op["intermediate"])
        if i > layer.intermediate_size:
            raise MoEError(f"plan op prune to {i} neurons does not fit layer {layer.name}")
        layer.set_weights(w_in[:, :, :i], w_out[:, :, :i])
    elif kind == "low_rank":
        LowRankExperts.install(layer, int(op["rank"]))
    elif kind == "quantize":
        if len(op["bits"]) != layer.num_experts:
            raise MoEError(
                f"plan op quantize has {len(op['bits'])} bit widths for layer {layer.name}"
            )
    else:
        raise MoEError(f"unknown plan op {kind!r}; this file was written by a newer qhybrid")


def replay(model: nn.Module, plan: dict[str, Any]) -> None:
    """Apply the structural part of every op of ``plan`` to ``model`` (a fresh base model)."""
    layers = {layer.name: layer for layer in find_moe_layers(model)}
    for op in plan.get("ops", []):
        name = op.get("layer")
        if name not in layers:
            raise MoEError(
                f"plan names layer {name!r}, which this model does not have ({list(layers)})"
            )
        apply_structure(layers[name], op)
        # low_rank swaps the experts module: refresh the view
        if op["op"] == "low_rank":
            layers = {layer.name: layer for layer in find_moe_layers(model)}
    model.config.moe_compression = copy.deepcopy(plan)  # type: ignore[union-attr]
    sync_config(model)


def save_compressed(model: nn.Module, path: str | Path) -> Path:
    """Write the compressed model (config with plan, safetensors weights, ``moe_plan.json``) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan = get_plan(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Tied weights (embeddings / lm head) share storage; safetensors wants them once.
    seen: dict[tuple[Any, ...], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in state.items():
        ptr = (v.data_ptr(), v.dtype, tuple(v.shape), v.stride()) if v.numel() else (id(v),)
        if ptr in seen:
            aliases[k] = seen[ptr]
        else:
            seen[ptr] = k
            unique[k] = v.clone()
    tmp = path / ".model.safetensors.tmp"
    save_file(unique, str(tmp), metadata={"aliases": json.dumps(aliases)})
    tmp.replace(path / "model.safetensors")
    config: Any = model.config
    d = config.to_dict()
    d["moe_compression"] = plan
    d["architectures"] = [type(model).__name__]
    d.update(plan["base"])  # the stock model is built with the base counts, then the plan replays
    atomic_write_json(path / "config.json", d)
    atomic_write_json(path / "moe_plan.json", plan)
    return path


def load_compressed(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_compressed`; the result equals the saved model exactly."""
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise MoEError(
            f"'{path}' is not a save_compressed folder (needs config.json and model.safetensors)"
        )
    d = json.loads((path / "config.json").read_text())
    plan = d.get("moe_compression") or {"base": {}, "ops": []}
    if "model_type" not in d:
        raise MoEError(f"{path / 'config.json'} has no model_type")
    config = transformers.AutoConfig.for_model(
        d["model_type"],
        **{k: v for k, v in d.items() if k not in ("model_type", "moe_compression")},
    )
    arch = (d.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise MoEError(f"unknown architecture {arch!r} in {path / 'config.json'}")
    model = cls(config)
    replay(model, plan)
    state = load_file(str(path / "model.safetensors"))
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for k, src in aliases.items():
        state[k] = state[src]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise MoEError(f"weights in {path} do not match the replayed plan: {err}") from err
    if missing or unexpected:
        raise MoEError(
            f"weights in {path} do not match the replayed model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()
