"""Batched greedy decoding with the KV cache and explicit position ids.

``transformers``' ``generate`` numbers new tokens consecutively; coupled positions
(:mod:`llm_sim.positions`) give every answer slot an id fixed by the prompt, so decoding is this
short loop instead: one forward pass over the left-padded prompts, then one cached step per new
token, each with its slot's position id. With sequential ids it gives exactly ``generate``'s
greedy output (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm_sim.data import Example
from llm_sim.positions import PositionScheme, position_ids

__all__ = ["generate_batched", "generate_one_by_one"]


@torch.no_grad()
def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Example],
    scheme: PositionScheme,
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 64,
) -> list[str]:
    """Greedy continuations of ``prompts`` (from :func:`~llm_sim.data.encode_prompt`), as text.

    ``max_new_tokens`` is one budget or one per prompt. Prompts are sorted by length and
    left-padded per batch, so every row's last prompt token sits in the same column; a row stops at
    ``eos`` or its budget (finished rows are fed padding until the batch ends).
    """
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    budgets = (
        [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = [prompts[i] for i in order[start : start + batch_size]]
        budget = torch.tensor([budgets[i] for i in order[start : start + batch_size]])
        max_new = int(budget.max())
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pos = torch.zeros((len(rows), width + max_new), dtype=torch.long)
        for b, r in enumerate(rows):
            n = len(r.input_ids)
            ids[b, width - n :] = torch.tensor(r.input_ids)
            mask[b, width - n :] = 1
            pos[b, width - n :] = torch.tensor(position_ids(r.layout, n + max_new, scheme))
        ids, mask, pos, budget = ids.to(device), mask.to(device), pos.to(device), budget.to(device)
        result = model(
            input_ids=ids, attention_mask=mask, position_ids=pos[:, :width], use_cache=True
        )
        new = [result.logits[:, -1].argmax(-1)]
        done = (new[0] == eos) | (budget <= 1)
        for j in range(1, max_new):
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            result = model(
                input_ids=new[-1][:, None],
                attention_mask=mask,
                position_ids=pos[:, width + j - 1 : width + j],
                cache=result.cache,
                use_cache=True,
            )
            token = result.logits[:, -1].argmax(-1).masked_fill(done, pad)
            new.append(token)
            done = done | (token == eos) | (budget <= j + 1)
        gen = torch.stack(new, dim=1).tolist()
        for b, i in enumerate(order[start : start + batch_size]):
            tokens = gen[b][: budgets[i]]
            tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
            out[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    return out


def generate_one_by_one(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Example],
    scheme: PositionScheme,
    *,
    max_new_tokens: int | Sequence[int],
) -> list[str]:
    """The same greedy decoding, one prompt at a time (the throughput baseline)."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else max_new_tokens
    return [
        generate_batched(model, tokenizer, [p], scheme, max_new_tokens=b)[0]
        for p, b in zip(prompts, budgets, strict=True)
    ]
