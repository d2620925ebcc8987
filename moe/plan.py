"""The compression plan: what every pass did to the model's structure, saved with the weights.

Each pass appends an operation to ``model.config.moe_compression = {"base": {...}, "ops": [...]}``:

* ``{"op": "drop", "layer": name, "keep": [router outputs kept, in order]}``
* ``{"op": "merge", "layer": name, "expert_map": [R ints], "groups": [[experts]...]}``
* ``{"op": "prune", "layer": name, "intermediate": I'}`` (kept neurons per expert)
* ``{"op": "low_rank", "layer": name, "rank": r}``
* ``{"op": "quantize", "layer": name, "bits": [per expert], "group_size": g}``

:func:`save_compressed` writes ``model.safetensors``, ``moe_plan.json``, the loading code
(``modeling_qhybrid_moe.py``, a copy of :mod:`moe.modeling`) and a ``config.json`` of model type
``qhybrid_moe`` that holds the family's config (``base_config``, with the *base* expert counts) and the
plan. :func:`load_compressed` — and ``AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)``, through the copied file — builds the stock model from the base config,
reshapes it by the plan (:func:`moe.modeling.build_structure`) and loads the weights strictly. Every
other loader fails on the folder (see :mod:`moe.modeling`): a stock config holds one expert count for
every layer, so non-uniform layers, expert maps and packed codes would otherwise reload as random
weights.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe import modeling
from moe.layers import sync_config
from moe.modeling import CONFIG_COUNT_KEYS, MoEError, PackedExperts, build_structure, check_plan
from qhybrid.runs import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "build_structure",
    "check_plan",
    "get_plan",
    "load_compressed",
    "record",
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
        for k in CONFIG_COUNT_KEYS
        if isinstance(getattr(config, k, None), int)
    }
    base["model_type"] = getattr(config, "model_type", None)
    base["architecture"] = type(model).__name__
    return base


def record(model: nn.Module, ops: list[dict[str, Any]]) -> None:
    """Append ``ops`` to the model's plan and resync the config's expert counts."""
    plan = get_plan(model)
    plan["ops"].extend(ops)
    model.config.moe_compression = plan  # type: ignore[union-attr]
    sync_config(model)


def _state_to_save(
    model: nn.Module, dtype: torch.dtype | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Unique tensors of the state dict (tied weights once, named in ``aliases``), floating tensors
    cast to ``dtype`` except the packed experts' codes and fp16 scales."""
    packed = {
        f"{name}.{b}"
        for name, mod in model.named_modules()
        if isinstance(mod, PackedExperts)
        for b, _ in mod.named_buffers()
    }
    seen: dict[tuple[Any, ...], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        ptr = (v.data_ptr(), v.dtype, tuple(v.shape), v.stride()) if v.numel() else (id(v),)
        if ptr in seen:
            aliases[k] = seen[ptr]
            continue
        seen[ptr] = k
        if dtype is not None and v.is_floating_point() and k not in packed:
            v = v.to(dtype)
        unique[k] = v.contiguous().cpu().clone()
    return unique, aliases


def save_compressed(
    model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None
) -> Path:
    """Write the compressed model to ``path`` (module docstring): weights (floating tensors in
    ``dtype``, default as held; packed codes and scales as they are), the plan, the loading code and a
    ``qhybrid_moe`` config that only :func:`load_compressed` and ``trust_remote_code`` loaders accept."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan = get_plan(model)
    unique, aliases = _state_to_save(model, dtype)
    tmp = path / ".model.safetensors.tmp"
    save_file(unique, str(tmp), metadata={"aliases": json.dumps(aliases)})
    tmp.replace(path / "model.safetensors")
    config: Any = model.config
    # base_config holds no model_type: transformers would pick a nested config of its own type
    base = {k: v for k, v in config.to_dict().items() if k not in (*_MOE_KEYS, "model_type")}
    base["architectures"] = [type(model).__name__]
    base.update({k: v for k, v in plan["base"].items() if k in CONFIG_COUNT_KEYS})
    if dtype is not None:
        base["dtype"] = str(dtype).removeprefix("torch.")
    auto = (
        "AutoModelForSeq2SeqLM"
        if getattr(config, "is_encoder_decoder", False)
        else "AutoModelForCausalLM"
    )
    cls = "QHybridMoeForSeq2SeqLM" if auto == "AutoModelForSeq2SeqLM" else "QHybridMoeForCausalLM"
    module = Path(modeling.MODELING_FILE).stem
    wrapper = {
        "model_type": modeling.MODEL_TYPE,
        "architectures": [cls],
        "auto_map": {"AutoConfig": f"{module}.QHybridMoeConfig", auto: f"{module}.{cls}"},
        "vocab_size": modeling.LOAD_HINT,  # a stock config refuses a string here: no silent load
        "base_model_type": config.model_type,
        "base_config": base,
        "moe_compression": plan,
    }
    (path / modeling.MODELING_FILE).write_text(Path(modeling.__file__).read_text())
    atomic_write_json(path / "moe_plan.json", plan)
    atomic_write_json(path / "config.json", wrapper)
    return path


_MOE_KEYS = ("moe_compression", "moe_experts_per_layer", "moe_routes_per_layer")


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


def load_compressed(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a model written by :func:`save_compressed` (or a stock result of
    :func:`moe.checkpoint.save_result`); the result equals the saved model exactly (``dtype`` casts the
    floating parameters afterwards). Raises :class:`MoEError` naming the file
    for a folder that is not one, a plan that does not fit, or weights that do not match it."""
    path = Path(path)
    d = modeling.read_folder_config(path) if (path / "config.json").is_file() else {}
    if d and d.get("model_type") != modeling.MODEL_TYPE and not d.get("moe_compression"):
        from moe.checkpoint import load_moe_checkpoint  # a stock result (dropped, pruned)

        return load_moe_checkpoint(path, dtype=dtype or "auto").to(device)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise MoEError(f"'{path}' is not a save_compressed folder: {path / name} is missing")
    return modeling.load_folder(path, dtype=dtype, device=device)
