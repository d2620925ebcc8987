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
    "is_stock",
    "load_moe_checkpoint",
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
        d = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MoEError(f"cannot read {folder / 'config.json'}: {err}") from err
    if not isinstance(d, dict):
        raise MoEError(f"{folder / 'config.json'} does not hold a JSON object")
    return d


def load_moe_checkpoint(
    folder: str | Path, *, dtype: torch.dtype = torch.float32, **from_pretrained: Any
) -> nn.Module:
    """A supported MoE checkpoint from ``folder`` in eval mode (see module docstring).

    ``from_pretrained`` keywords (``device_map``, ``max_memory``, ``offload_folder``) pass through.

    Raises:
        MoEError: not a model folder, an unsupported or mismatched family, no weights, or weights that
            do not fit the config.
    """
    import transformers

    folder = Path(folder)
    d = _read_config(folder)
    model_type = d.get("model_type")
    if model_type not in FAMILIES:
        raise MoEError(
            f"'{folder}' holds model_type {model_type!r}, which is not a supported sparse-MoE family "
            f"({', '.join(FAMILIES)}); pass a Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE or Switch checkpoint"
        )
    arch = (d.get("architectures") or [FAMILIES[model_type]])[0]
    cls = getattr(transformers, arch, None)
    if (
        cls is None
        or getattr(cls, "config_class", None) is None
        or cls.config_class.model_type != model_type
    ):
        raise MoEError(
            f"'{folder}': architecture {arch!r} does not belong to model_type {model_type!r}; the folder "
            f"mixes two families (expected {FAMILIES[model_type]})"
        )
    if d.get("moe_compression"):
        from moe.plan import load_compressed

        return load_compressed(folder)
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise MoEError(f"'{folder}' has a config but no weights ({', '.join(_WEIGHT_FILES)})")
    try:
        model, info = cls.from_pretrained(
            folder, dtype=dtype, output_loading_info=True, **from_pretrained
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise MoEError(
            f"the weights in '{folder}' do not fit its config or cannot be read: {err}"
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


def calibration_texts(source: str, *, max_chars: int = 400_000) -> list[str]:
    """Documents from a ``.txt`` / ``.jsonl`` file or ``"builtin"`` (Python standard-library source)."""
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
    if not path.is_file():
        raise MoEError(
            f"calibration source {source!r} is neither 'builtin' nor a file; pass a .txt or .jsonl file"
        )
    raw = path.read_text(encoding="utf-8", errors="replace")
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


def text_batches(
    model: nn.Module,
    texts: Sequence[str],
    *,
    folder: str | Path | None = None,
    sequences: int = 64,
    seq_len: int = 64,
    batch_size: int = 16,
) -> tuple[list[dict[str, torch.Tensor]], str]:
    """Token batches of ``seq_len`` from ``texts`` (concatenated) and how they were tokenised."""
    config: Any = model.config
    vocab = int(config.vocab_size)
    ids: list[int] = []
    how = "UTF-8 bytes (the folder has no tokenizer)"
    tok = _tokenizer(folder)
    joined = "\n\n".join(texts)
    if tok is not None:
        ids = list(tok(joined, add_special_tokens=False)["input_ids"])
        how = f"the folder's tokenizer ({type(tok).__name__})"
    else:
        ids = [b % vocab for b in joined.encode("utf-8")]
    if max(ids, default=0) >= vocab:
        raise MoEError(
            f"the tokenizer produced ids up to {max(ids)} but the model has {vocab}; mismatched folder"
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


def _tokenizer(folder: str | Path | None) -> Any:
    if folder is None or not any(
        (Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
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


def save_result(model: nn.Module, folder: str | Path) -> tuple[Path, str]:
    """Save a compressed model; returns (folder, loader): ``"from_pretrained"`` or ``"load_compressed"``."""
    from moe.plan import get_plan, save_compressed
    from qhybrid.runs import atomic_write_json

    folder = Path(folder)
    if not is_stock(model):
        return save_compressed(model, folder), "load_compressed"
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
    try:
        model.save_pretrained(folder)  # type: ignore[operator]
    finally:
        config.__dict__.update(extra)
    atomic_write_json(folder / "moe_plan.json", plan)  # provenance only; the folder is stock
    return folder, "from_pretrained"
