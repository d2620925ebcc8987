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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe.experts import LowRankExperts, PackedExperts
from moe.layers import _CONFIG_COUNT_KEYS, MoEError, MoELayer, find_moe_layers, sync_config
from qhybrid.runs import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "apply_structure",
    "check_plan",
    "get_plan",
    "load_compressed",
    "record",
    "replay",
    "save_compressed",
    "tensor_bytes_on_disk",
]


def get_plan(model: nn.Module) -> dict[str, Any]:
    """The model's plan (a fresh empty one when no pass has run)."""
    plan = getattr(model.config, "moe_compression", None)  # type: ignore[union-attr]
    if plan is None:
        return {"base": _base_snapshot(model), "ops": []}
    return copy.deepcopy(plan)  # type: ignore[no-any-return]


def _base_snapshot(model: nn.Module) -> dict[str, Any]:
    """The config counts to rebuild the stock model with, and what it is (checked on replay)."""
    config = model.config  # type: ignore[union-attr]
    base: dict[str, Any] = {
        k: getattr(config, k)
        for k in _CONFIG_COUNT_KEYS
        if isinstance(getattr(config, k, None), int)
    }
    base["model_type"] = getattr(config, "model_type", None)
    base["architecture"] = type(model).__name__
    return base


_COUNT_FIELDS = set(_CONFIG_COUNT_KEYS)


def record(model: nn.Module, ops: list[dict[str, Any]]) -> None:
    """Append ``ops`` to the model's plan and resync the config's expert counts."""
    plan = get_plan(model)
    plan["ops"].extend(ops)
    model.config.moe_compression = plan  # type: ignore[union-attr]
    sync_config(model)


@dataclass
class _Shape:
    """What a layer looks like while a plan is checked: router outputs, experts, hidden width, kind."""

    routes: int
    experts: int
    intermediate: int
    hidden: int
    gated: bool
    merged: bool
    frozen: str = ""  # "low_rank" / "quantize" once the experts are no plain tensors


def _int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise MoEError(f"plan op field {what}={value!r} must be a list of integers")
    return value


def _check_op(shape: _Shape, op: dict[str, Any], name: str) -> None:
    """Check one op against the layer's current shape and update the shape (nothing is changed)."""
    kind = op.get("op")
    if kind in ("drop", "merge", "prune", "low_rank") and shape.frozen:
        raise MoEError(
            f"plan op {kind} on layer {name} follows {shape.frozen}, which no pass allows"
        )
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
        shape.experts, shape.merged = max(emap) + 1, True
    elif kind == "prune":
        i = op.get("intermediate")
        if not isinstance(i, int) or not 1 <= i <= shape.intermediate or not shape.gated:
            raise MoEError(f"plan op prune to {i!r} neurons does not fit layer {name}")
        shape.intermediate = i
    elif kind == "low_rank":
        if not isinstance(op.get("rank"), int) or op["rank"] < 1 or not shape.gated:
            raise MoEError(f"plan op low_rank {op.get('rank')!r} does not fit layer {name}")
        shape.frozen = "low_rank"
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
            shape.frozen = "quantize"
    else:
        raise MoEError(f"unknown plan op {kind!r}; this file was written by a newer qhybrid")


def check_plan(model: nn.Module, plan: Any) -> None:
    """Raise :class:`MoEError` unless every op of ``plan`` fits ``model`` (a fresh base model)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("ops", []), list):
        raise MoEError(f"a compression plan is a dict with a list 'ops'; got {type(plan).__name__}")
    base = plan.get("base", {})
    config: Any = model.config  # type: ignore[union-attr]
    for key, have in (
        ("model_type", getattr(config, "model_type", None)),
        ("architecture", type(model).__name__),
    ):
        want = base.get(key)
        if want is not None and want != have:
            raise MoEError(
                f"the plan is for {key} {want!r} but the model is {have!r}; load it with its own model"
            )
    for key in _COUNT_FIELDS & set(base):
        if getattr(config, key, None) != base[key]:
            raise MoEError(
                f"the plan starts from {key}={base[key]} but the model has {getattr(config, key, None)}"
            )
    layers = {layer.name: layer for layer in find_moe_layers(model)}
    shapes = {
        name: _Shape(
            lay.num_routes,
            lay.num_experts,
            lay.intermediate_size,
            lay.hidden_size,
            lay.gated,
            lay.has_expert_map,
        )
        for name, lay in layers.items()
    }
    for op in plan.get("ops", []):
        name = op.get("layer") if isinstance(op, dict) else None
        if name not in shapes:
            raise MoEError(
                f"plan names layer {name!r}, which this model does not have ({list(layers)})"
            )
        _check_op(shapes[name], op, name)


def apply_structure(layer: MoELayer, op: dict[str, Any]) -> None:
    """Reshape ``layer`` as ``op`` did, keeping whatever weights fit (the caller loads the real ones);
    ``op`` must have been checked by :func:`check_plan`."""
    kind = op["op"]
    w_in, w_out = layer.get_weights()
    if kind == "drop":
        keep = list(op["keep"])
        layer.slice_router(keep)
        layer.set_weights(w_in[keep], w_out[keep])
    elif kind == "merge":
        emap = torch.tensor(op["expert_map"])
        g = int(emap.max()) + 1
        layer.set_weights(w_in[:g], w_out[:g])
        layer.set_expert_map(emap)
    elif kind == "prune":
        i = int(op["intermediate"])
        layer.set_weights(w_in[:, :, :i], w_out[:, :, :i])
    elif kind == "low_rank":
        LowRankExperts.install(layer, int(op["rank"]))
    elif kind == "quantize" and op.get("storage", "fake") == "packed":
        PackedExperts.install(layer, op["bits"], int(op["group_size"]))


def replay(model: nn.Module, plan: dict[str, Any]) -> None:
    """Apply the structural part of every op of ``plan`` to ``model`` (a fresh base model): the whole
    plan is checked against the model first, so a plan that does not fit leaves it unchanged."""
    check_plan(model, plan)
    layers = {layer.name: layer for layer in find_moe_layers(model)}
    for op in plan.get("ops", []):
        apply_structure(layers[op["layer"]], op)
        if op["op"] in (
            "low_rank",
            "quantize",
        ):  # the experts module may be swapped: refresh the view
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
    d.update(
        {k: v for k, v in plan["base"].items() if k in _COUNT_FIELDS}
    )  # stock model: base counts
    atomic_write_json(path / "config.json", d)
    atomic_write_json(path / "moe_plan.json", plan)
    return path


def tensor_bytes_on_disk(path: str | Path) -> dict[str, int]:
    """Bytes each tensor occupies in ``path/model.safetensors``, read from the file's own header
    (``data_offsets``): a measurement of the file, not a count from shapes and bit widths."""
    file = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
    with file.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {
        k: v["data_offsets"][1] - v["data_offsets"][0]
        for k, v in header.items()
        if k != "__metadata__"
    }


def load_compressed(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_compressed`; the result equals the saved model exactly."""
    import transformers
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise MoEError(
            f"'{path}' is not a save_compressed folder (needs config.json and model.safetensors)"
        )
    try:
        d = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MoEError(f"cannot read {path / 'config.json'}: {err}") from err
    if not isinstance(d, dict) or "model_type" not in d:
        raise MoEError(f"{path / 'config.json'} has no model_type")
    plan = d.get("moe_compression") or {"base": {}, "ops": []}
    try:
        config = transformers.AutoConfig.for_model(
            d["model_type"],
            **{k: v for k, v in d.items() if k not in ("model_type", "moe_compression")},
        )
    except (ValueError, KeyError, TypeError) as err:
        raise MoEError(f"{path / 'config.json'} is not a valid config: {err}") from err
    arch = (d.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise MoEError(f"unknown architecture {arch!r} in {path / 'config.json'}")
    model = cls(config)
    replay(model, plan)
    try:
        state = load_file(str(path / "model.safetensors"))
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (OSError, ValueError, SafetensorError) as err:
        raise MoEError(
            f"{path / 'model.safetensors'} is not a readable safetensors file: {err}"
        ) from err
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
