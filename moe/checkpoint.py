"""Local Hugging Face MoE checkpoints in, compressed checkpoints out.

:func:`load_moe_checkpoint` opens a ``from_pretrained`` folder of a supported family and refuses anything
else before building a model: a ``model_type`` outside :data:`FAMILIES` (a dense Llama, say), an
``architectures`` entry of another family, no weight file, or weights whose keys or shapes do not match
the config (missing, unexpected or mismatched keys). A folder written by :func:`moe.plan.save_compressed`
is loaded with :func:`moe.plan.load_compressed`.

:func:`calibration_texts` reads calibration text from a ``.txt`` file (blank-line separated documents), a
``.jsonl`` file (the ``"text"`` field of each line), or ``"builtin"``: source files of the Python standard
library, present on every machine. :func:`text_batches` tokenises them with the folder's tokenizer when
it has one, else as UTF-8 bytes (id = byte mod vocabulary size; labelled in the report).

:func:`save_result` writes with stock ``save_pretrained`` when the compressed model is still a stock
architecture (dropped experts, uniformly pruned neurons: every layer with the same counts, no expert map,
plain expert tensors), so ``AutoModel*.from_pretrained`` loads it; otherwise (merged experts with an
expert map, non-uniform counts, low-rank factors, packed low-bit codes) with
:func:`moe.plan.save_compressed`, loaded by :func:`moe.plan.load_compressed`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe.layers import MoEError, find_moe_layers

__all__ = [
    "FAMILIES",
    "calibration_texts",
    "evaluate_lm",
    "bytes_by_part",
    "checkpoint_dtype",
    "is_stock",
    "load_moe_checkpoint",
    "load_tokenizer",
    "save_result",
    "text_batches",
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

    from moe.modeling import MODEL_TYPE

    folder = Path(folder)
    d = _read_config(folder)
    model_type = d.get("model_type")
    if model_type == MODEL_TYPE or (model_type in FAMILIES and d.get("moe_compression")):
        from moe.plan import load_compressed

        return load_compressed(folder, dtype=None if dtype == "auto" else dtype)  # type: ignore[arg-type]
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


def calibration_texts(
    source: str, *, max_chars: int = 400_000, max_bytes: int = 64 << 20
) -> list[str]:
    """Documents from a ``.txt`` / ``.jsonl`` file (at most ``max_bytes`` read) or ``"builtin"`` (Python
    standard-library source). Missing, empty, binary or non-UTF-8 files, folders and devices are a
    :class:`MoEError` naming the file."""
    if source == "builtin":
        import os

        root = Path(os.__file__).parent
        files = sorted(root.glob("*.py"))
        docs, total = [], 0
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            docs.append(text)
            total += len(text)
            if total >= max_chars:
                break
        return docs
    path = Path(source)
    if not path.exists():
        raise MoEError(
            f"calibration file {path} does not exist; pass a .txt or .jsonl file or 'builtin'"
        )
    if not path.is_file():  # a folder, a device (/dev/zero), a FIFO: never read it
        raise MoEError(f"calibration file {path} is not a regular file; pass a .txt or .jsonl file")
    raw = _read_text(path, max_bytes)
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise MoEError(f"{path}:{n} is not JSON: {err}") from err
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise MoEError(f"{path}:{n} has no string field 'text'")
            docs.append(item["text"])
    else:
        docs = [p for p in raw.split("\n\n") if p.strip()]
    if not docs or sum(len(t) for t in docs) < 16:
        raise MoEError(
            f"calibration file {path} holds no text; pass a file with at least a few lines"
        )
    return docs


def _read_text(path: Path, max_bytes: int) -> str:
    """At most ``max_bytes`` of ``path`` as UTF-8 text; binary or undecodable files are refused."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes)
    except OSError as err:
        raise MoEError(f"cannot read calibration file {path}: {err.strerror}") from err
    if not data.strip():
        raise MoEError(f"calibration file {path} is empty; pass a file with text")
    if b"\0" in data:
        raise MoEError(f"calibration file {path} is binary (it holds NUL bytes); pass UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(data) - 3:  # a character cut by the max_bytes limit
            return data[: err.start].decode("utf-8")
        raise MoEError(
            f"calibration file {path} is not UTF-8 text (byte {err.start}); pass UTF-8 text"
        ) from err


def text_batches(
    model: nn.Module,
    texts: Sequence[str],
    *,
    tokenizer: str | Path = "bytes",
    sequences: int = 64,
    seq_len: int = 64,
    batch_size: int = 16,
) -> tuple[list[dict[str, torch.Tensor]], str]:
    """Token batches of ``seq_len`` from ``texts`` (concatenated) and how they were tokenised:
    ``tokenizer`` is a folder holding a tokenizer (a model folder) or ``"bytes"`` (UTF-8 bytes modulo
    the vocabulary, for byte-level models)."""
    config: Any = model.config
    vocab = int(config.vocab_size)
    joined = "\n\n".join(texts)
    if str(tokenizer) == "bytes":
        ids = [b % vocab for b in joined.encode("utf-8")]
        how = "UTF-8 bytes"
    else:
        tok = load_tokenizer(tokenizer)
        ids = list(tok(joined, add_special_tokens=False)["input_ids"])
        how = f"the tokenizer in {tokenizer} ({type(tok).__name__})"
    if max(ids, default=0) >= vocab:
        raise MoEError(
            f"the tokenizer {tokenizer} produced ids up to {max(ids)} but the model has {vocab}; "
            "pass the model's own tokenizer"
        )
    n = min(sequences, len(ids) // seq_len)
    if n < 1:
        raise MoEError(
            f"calibration text gives {len(ids)} tokens, fewer than one sequence of {seq_len}"
        )
    x = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    batches = []
    for i in range(0, n, batch_size):
        b = x[i : i + batch_size]
        batch = {"input_ids": b, "attention_mask": torch.ones_like(b)}
        if getattr(config, "is_encoder_decoder", False):
            batch["decoder_input_ids"] = b.clone()
            batch["decoder_attention_mask"] = torch.ones_like(b)
        batches.append(batch)
    return batches, how


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in ``folder``; a folder without one, or one that does not load, is a
    :class:`MoEError` naming it and the fix."""
    folder = Path(folder)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise MoEError(
            f"'{folder}' has no tokenizer (tokenizer.json or tokenizer_config.json); pass "
            "tokenizer='path/to/tokenizer-folder', or tokenizer='bytes' for a byte-level model"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # the library boundary: any failure is a broken tokenizer folder
        raise MoEError(f"the tokenizer in '{folder}' does not load: {err}") from err


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Next-token accuracy and perplexity (decoder next token for Switch) over ``batches``."""
    model.eval()
    correct, nll, count = 0.0, 0.0, 0
    for batch in batches:
        logits = model(**batch).logits.float()
        target = batch.get("decoder_input_ids", batch["input_ids"])
        logits, target = logits[:, :-1], target[:, 1:]
        lp = logits.log_softmax(-1)
        nll += float(-lp.gather(-1, target[..., None]).sum())
        correct += float((logits.argmax(-1) == target).sum())
        count += target.numel()
    return {"accuracy": correct / count, "perplexity": math.exp(nll / count)}


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
    :func:`moe.plan.save_compressed`, which only ``moe.load_compressed`` and ``trust_remote_code``
    loaders accept."""
    from moe.plan import get_plan, save_compressed
    from qhybrid.runs import atomic_write_json

    folder = Path(folder)
    if not is_stock(model):
        how = "moe.load_compressed or AutoModel*.from_pretrained(..., trust_remote_code=True)"
        return save_compressed(model, folder, dtype=dtype), how
    config: Any = model.config
    key = _INTERMEDIATE_KEY.get(getattr(config, "model_type", ""), "")
    if hasattr(config, key):
        setattr(config, key, find_moe_layers(model)[0].intermediate_size)
    plan = get_plan(model)
    extra = {
        k: config.__dict__.pop(k)
        for k in ("moe_compression", "moe_experts_per_layer", "moe_routes_per_layer")
        if k in config.__dict__
    }
    held = next(model.parameters()).dtype
    try:
        model.to(dtype or held).save_pretrained(folder)  # type: ignore[operator]
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


def bytes_by_part(folder: str | Path) -> dict[str, int]:
    """Bytes on disk of each part of the model in ``folder``, read from its safetensors headers."""
    out = dict.fromkeys(PARTS, 0)
    for file in _weight_files(Path(folder)):
        for k, v in safetensors_header(file).items():
            out[part_of(k)] += int(v["data_offsets"][1]) - int(v["data_offsets"][0])
    return out
