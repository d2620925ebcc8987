"""Calibration text in, token batches out: the input of the routing statistics (:mod:`moe.stats`).

:func:`calibration_texts` reads calibration text from a ``.txt`` file (blank-line separated
documents), a ``.jsonl`` file (the ``"text"`` field of each line), or ``"builtin"``: source files of
the Python standard library, present on every machine; missing, empty, binary or non-UTF-8 files,
folders and devices are a :class:`~moe.modeling.MoEError` naming the file, and at most
``max_bytes`` are read. :func:`text_batches` tokenises them with a folder's tokenizer
(:func:`load_tokenizer`) or as UTF-8 bytes (id = byte mod vocabulary size; labelled in the report).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moe.layers import MoEError

__all__ = ["calibration_texts", "load_tokenizer", "text_batches"]


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
