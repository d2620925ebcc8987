"""Local Hugging Face MoE checkpoints in, compressed checkpoints out: every load and save of moe.

The flow of a compression: :func:`load_moe_checkpoint` -> calibration batches
(:mod:`moe.calibration`) -> routing statistics (:mod:`moe.stats`) -> passes (:mod:`moe.drop`,
:mod:`moe.merge`, :mod:`moe.compress`, :mod:`moe.quantize`, each recorded in the plan,
:mod:`moe.plan`) -> :func:`save_result` -> :func:`load_compressed`.

Loading. :func:`load_moe_checkpoint` opens a ``from_pretrained`` folder of a supported family and
refuses anything else before building a model: a ``model_type`` outside :data:`FAMILIES` (a dense
Llama, say), an ``architectures`` entry of another family, no weight file, weight files whose
safetensors header does not describe the file (:func:`safetensors_header`), or weights whose keys or
shapes do not match the config (missing, unexpected or mismatched keys). A folder written by
:func:`save_compressed` is loaded with :func:`load_compressed`. Every loader failure is one
:class:`~moe.modeling.MoEError` naming the file.

Saving. :func:`save_result` writes with stock ``save_pretrained`` when the compressed model is still
a stock architecture (dropped experts, uniformly pruned neurons: every layer with the same counts, no
expert map, plain expert tensors), so ``AutoModel*.from_pretrained`` loads it; otherwise (merged
experts with an expert map, non-uniform counts, low-rank factors, packed low-bit codes) with
:func:`save_compressed`: ``model.safetensors``, ``moe_plan.json``, the loading code
(``modeling_qhybrid_moe.py``, a copy of :mod:`moe.modeling`) and a ``config.json`` of model type
``qhybrid_moe`` that holds the family's config (``base_config``, with the *base* expert counts) and
the plan. :func:`load_compressed` — and ``AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)``, through the copied file — builds the stock model from the base config,
reshapes it by the plan and loads the weights strictly. Every other loader fails on the folder (see
:mod:`moe.modeling`): a stock config holds one expert count for every layer, so non-uniform layers,
expert maps and packed codes would otherwise reload as random weights. Every file is written to a
temporary file and renamed (never onto a device, a FIFO or a folder).

Sizes. :func:`bytes_by_part` and :func:`tensor_bytes_on_disk` read the bytes of each tensor from the
safetensors headers: measurements of the files, not counts from shapes and bit widths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe import modeling
from moe.layers import MoEError, find_moe_layers
from moe.modeling import CONFIG_COUNT_KEYS, PackedExperts
from moe.plan import get_plan
from qhybrid.runs import atomic_write_json, atomic_write_text

__all__ = [
    "FAMILIES",
    "PARTS",
    "bytes_by_part",
    "checkpoint_dtype",
    "is_stock",
    "load_compressed",
    "load_moe_checkpoint",
    "parameters",
    "safetensors_header",
    "save_compressed",
    "save_result",
    "tensor_bytes_on_disk",
]

# model_type -> the architecture class we load it as
FAMILIES = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "switch_transformers": "SwitchTransformersForConditionalGeneration",
}
# config key of the routed experts' hidden width, per family
_INTERMEDIATE_KEY = {"mixtral": "intermediate_size", "qwen2_moe": "moe_intermediate_size",
                     "qwen3_moe": "moe_intermediate_size", "olmoe": "intermediate_size",
                     "switch_transformers": "d_ff"}  # fmt: skip
_MOE_KEYS = ("moe_compression", "moe_experts_per_layer", "moe_routes_per_layer")  # config extras
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")  # fmt: skip


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise MoEError(
            f"'{folder}' is not a Hugging Face model folder (no config.json); pass a local checkpoint"
        )
    try:
        d = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MoEError(f"cannot read {folder / 'config.json'}: {err}") from err
    if not isinstance(d, dict):
        raise MoEError(f"{folder / 'config.json'} does not hold a JSON object")
    return d


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files a folder's weights live in (shards from the index), checked to exist."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (
            OSError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ) as err:
            raise MoEError(
                f"{index} is not a safetensors index (a 'weight_map' object): {err}"
            ) from err
        files = [folder / str(n) for n in names]
        for f in files:
            if not f.is_file():
                raise MoEError(f"{index} names {f.name}, which is missing from '{folder}'")
        return files
    return [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []


def safetensors_header(file: Path) -> dict[str, Any]:
    """The tensor table of a safetensors file, checked against the file: a garbage, truncated or
    over-long file is a :class:`MoEError` naming it (before any loader reads it)."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= n <= size - 8:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(f.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise MoEError(
            f"{file} is not a safetensors file: {err}; re-save or re-download it"
        ) from err
    if 8 + n + end != size:
        raise MoEError(
            f"{file} is truncated or padded: its header describes {8 + n + end} bytes but the file has "
            f"{size}; re-save or re-download it"
        )
    return tensors


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def checkpoint_dtype(folder: str | Path) -> torch.dtype:
    """The floating dtype that holds most of a folder's weight bytes (read from safetensors headers;
    float32 for ``.bin`` checkpoints): compressed results are saved in it."""
    totals: dict[torch.dtype, int] = {}
    for file in _weight_files(Path(folder)):
        for v in safetensors_header(file).values():
            if v.get("dtype") in _DTYPES:
                dt = _DTYPES[v["dtype"]]
                totals[dt] = (
                    totals.get(dt, 0) + int(v["data_offsets"][1]) - int(v["data_offsets"][0])
                )
    return max(totals, key=lambda k: totals[k]) if totals else torch.float32


def load_moe_checkpoint(
    folder: str | Path, *, dtype: torch.dtype | str = torch.float32, **from_pretrained: Any
) -> nn.Module:
    """A supported MoE checkpoint from ``folder`` in eval mode, in ``dtype`` (default float32: the
    passes compute there; :func:`checkpoint_dtype` tells the folder's own dtype to save in).

    ``from_pretrained`` keywords (``device_map``, ``max_memory``, ``offload_folder``) pass through. A
    folder written by :func:`moe.plan.save_compressed` is loaded with :func:`moe.plan.load_compressed`.

    Raises:
        MoEError: not a model folder, an unsupported or mismatched family, no weights, weight files that
            are garbage or truncated, or weights that do not fit the config — each naming the file.
    """
    import transformers

    folder = Path(folder)
    d = _read_config(folder)
    model_type = d.get("model_type")
    if model_type == modeling.MODEL_TYPE or (model_type in FAMILIES and d.get("moe_compression")):
        wanted = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        return load_compressed(folder, dtype=None if isinstance(wanted, str) else wanted)
    if model_type not in FAMILIES:
        raise MoEError(
            f"{folder / 'config.json'} holds model_type {model_type!r}, which is not a supported sparse-MoE "
            f"family ({', '.join(FAMILIES)}); pass a Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE or Switch checkpoint"
        )
    arch = (d.get("architectures") or [FAMILIES[model_type]])[0]
    cls = getattr(transformers, str(arch), None)
    if (
        cls is None
        or getattr(cls, "config_class", None) is None
        or cls.config_class.model_type != model_type
    ):
        raise MoEError(
            f"{folder / 'config.json'}: architecture {arch!r} does not belong to model_type {model_type!r}; "
            f"the folder mixes two families (expected {FAMILIES[model_type]})"
        )
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise MoEError(f"'{folder}' has a config but no weights ({', '.join(_WEIGHT_FILES)})")
    for file in _weight_files(folder):
        safetensors_header(file)
    try:
        model, info = cls.from_pretrained(  # mismatches come back in info: our message names them
            folder,
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **from_pretrained,
        )
    except Exception as err:  # the library boundary: any loader failure is a bad folder
        raise MoEError(
            f"the weights in '{folder}' do not fit {folder / 'config.json'} or cannot be read: {err}"
        ) from err
    bad = {
        k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(bad.values()):
        raise MoEError(
            f"the weights in '{folder}' do not fit its config ({arch}): "
            + "; ".join(f"{k} {v[:4]}{' ...' if len(v) > 4 else ''}" for k, v in bad.items() if v)
            + " — the weights belong to another model; use a consistent checkpoint"
        )
    find_moe_layers(model)  # a supported family always has MoE layers; fail clearly if not
    return model.eval()


def is_stock(model: nn.Module) -> bool:
    """True when the stock architecture class can hold the model from its config alone."""
    layers = find_moe_layers(model)
    return len({(lay.num_experts, lay.intermediate_size) for lay in layers}) == 1 and all(
        not lay.has_expert_map and not hasattr(lay.experts, "dense") for lay in layers
    )


def save_result(
    model: nn.Module, folder: str | Path, *, dtype: torch.dtype | None = None
) -> tuple[Path, str]:
    """Save a compressed model with its floating weights in ``dtype`` (default: as held); returns
    (folder, how to load it). A stock architecture is written by ``save_pretrained`` (the model then
    holds the saved, rounded values) and loads with any ``from_pretrained``; anything else by
    :func:`save_compressed`, which only ``moe.load_compressed`` and ``trust_remote_code``
    loaders accept."""
    folder = _output_folder(folder)
    if not is_stock(model):
        how = "moe.load_compressed or AutoModel*.from_pretrained(..., trust_remote_code=True)"
        return save_compressed(model, folder, dtype=dtype), how
    config: Any = model.config
    key = _INTERMEDIATE_KEY.get(getattr(config, "model_type", ""), "")
    if hasattr(config, key):
        setattr(config, key, find_moe_layers(model)[0].intermediate_size)
    plan = get_plan(model)
    extra = {k: config.__dict__.pop(k) for k in _MOE_KEYS if k in config.__dict__}
    held = next(model.parameters()).dtype
    pretrained: Any = model.to(dtype or held)  # a transformers PreTrainedModel
    try:
        pretrained.save_pretrained(folder)
    finally:
        model.to(held)
        config.__dict__.update(extra)
    atomic_write_json(folder / "moe_plan.json", plan)  # provenance only; the folder is stock
    return folder, "AutoModel*.from_pretrained (stock)"


PARTS = ("routed experts", "routers", "shared experts", "attention", "embeddings and head", "norms",
         "other")  # fmt: skip


def part_of(key: str) -> str:
    """Which part of an MoE model a state-dict key belongs to (for the bytes-per-part report)."""
    if ".experts." in key:
        return "routed experts"
    if ".gate.weight" in key or ".router." in key:
        return "routers"
    if "shared_expert" in key:
        return "shared experts"
    if any(a in key for a in ("self_attn", "SelfAttention", "EncDecAttention", "attention")):
        return "attention"
    if any(e in key for e in ("embed", "lm_head", "shared.weight", "wte", "relative_attention")):
        return "embeddings and head"
    if "norm" in key:
        return "norms"
    return "other"


def parameters(folder: str | Path) -> int:
    """Parameters of the model in ``folder``, counted from its safetensors headers' shapes (no
    tensor is read): the size of a model before it is loaded."""
    return sum(
        math.prod(int(d) for d in v.get("shape", []))
        for file in _weight_files(Path(folder))
        for v in safetensors_header(file).values()
    )


def bytes_by_part(folder: str | Path) -> dict[str, int]:
    """Bytes on disk of each part of the model in ``folder``, read from its safetensors headers."""
    out = dict.fromkeys(PARTS, 0)
    for file in _weight_files(Path(folder)):
        for k, v in safetensors_header(file).items():
            out[part_of(k)] += int(v["data_offsets"][1]) - int(v["data_offsets"][0])
    return out


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
    path = _output_folder(path)
    plan = get_plan(model)
    unique, aliases = _state_to_save(model, dtype)
    _save_tensors(unique, path / "model.safetensors", {"aliases": json.dumps(aliases)})
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
    atomic_write_text(path / modeling.MODELING_FILE, Path(modeling.__file__).read_text())
    atomic_write_json(path / "moe_plan.json", plan)
    atomic_write_json(path / "config.json", wrapper)
    return path


def _output_folder(path: str | Path) -> Path:
    """``path`` as a folder to write into (made if new); a file or device there is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MoEError(f"'{path}' is a file or device, not a folder; save into a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_tensors(tensors: dict[str, torch.Tensor], file: Path, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file`` into a temporary file beside ``file``, renamed onto it only when
    ``file`` is new or a regular file (never a device, a FIFO or a folder)."""
    import os

    from safetensors.torch import save_file

    if file.exists() and not file.is_file():
        raise MoEError(f"'{file}' is a folder, device or FIFO, not a regular file; save elsewhere")
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def tensor_bytes_on_disk(path: str | Path) -> dict[str, int]:
    """Bytes each tensor occupies in ``path/model.safetensors``, read from the file's own header
    (``data_offsets``, checked against the file): a measurement of the file, not a count from
    shapes and bit widths."""
    file = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
    return {
        k: int(v["data_offsets"][1]) - int(v["data_offsets"][0])
        for k, v in safetensors_header(file).items()
    }


def load_compressed(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a model written by :func:`save_compressed` (or a stock result of :func:`save_result`);
    the result equals the saved model exactly (``dtype`` casts the floating parameters afterwards).
    Raises :class:`MoEError` naming the file for a folder that is not one, a plan that does not fit,
    or weights that do not match it."""
    path = Path(path)
    d = modeling.read_folder_config(path) if (path / "config.json").is_file() else {}
    if d and d.get("model_type") != modeling.MODEL_TYPE and not d.get("moe_compression"):
        return load_moe_checkpoint(path, dtype=dtype or "auto").to(device)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise MoEError(f"'{path}' is not a save_compressed folder: {path / name} is missing")
    return modeling.load_folder(path, dtype=dtype, device=device)
