"""Batched greedy generation with the KV cache, and the one-at-a-time reference it is compared with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["generate_batched", "generate_one_by_one"]


@torch.no_grad()
def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[str]:
    """Greedy continuations of token-id ``prompts``, decoded to text (prompt excluded).

    Prompts are sorted by length and left-padded per batch, so every row's last prompt token sits in
    the same column and ``generate`` extends all rows with one cached forward pass per new token;
    rows stop at ``eos`` (finished rows are padded until the batch ends).
    """
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = list(prompts[i])
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


def generate_one_by_one(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int
) -> list[str]:
    """The same greedy decoding, one prompt per ``generate`` call (the throughput baseline)."""
    return [
        generate_batched(model, tokenizer, [p], max_new_tokens=max_new_tokens, batch_size=1)[0]
        for p in prompts
    ]
