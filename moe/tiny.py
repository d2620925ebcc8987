"""Tiny randomly initialised MoE models of every supported family, built from transformers configs.

No downloads: each model is ``<Family>ForCausalLM(<Family>Config(...))`` (Switch:
``SwitchTransformersForConditionalGeneration``) with hidden size 32 and 2 layers, for tests and demos.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FAMILIES", "tiny_moe", "tiny_batch"]

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "switch")


# family -> (transformers config class, model class)
_CLASSES = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM"),
    "switch": ("SwitchTransformersConfig", "SwitchTransformersForConditionalGeneration"),
}


def _config_kwargs(
    family: str, *, num_experts: int, top_k: int, hidden: int, intermediate: int, layers: int,
    vocab: int,
) -> dict[str, Any]:  # fmt: skip
    """The config keywords of a tiny model of ``family``."""
    if family == "switch":
        return dict(vocab_size=vocab, d_model=hidden, d_kv=8, d_ff=intermediate, num_layers=layers,
                    num_decoder_layers=layers, num_heads=4, num_experts=num_experts,
                    encoder_sparse_step=1, decoder_sparse_step=1, expert_capacity=10_000)  # fmt: skip
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  num_experts_per_tok=top_k, intermediate_size=intermediate)  # fmt: skip
    own = {
        "mixtral": dict(num_local_experts=num_experts),
        "qwen2_moe": dict(moe_intermediate_size=intermediate, num_experts=num_experts,
                          shared_expert_intermediate_size=intermediate),
        "qwen3_moe": dict(head_dim=8, moe_intermediate_size=intermediate, num_experts=num_experts),
        "olmoe": dict(num_experts=num_experts, eos_token_id=vocab - 1, pad_token_id=0),
    }  # fmt: skip
    return {**common, **own[family]}


def tiny_moe(
    family: str = "mixtral",
    *,
    num_experts: int = 8,
    top_k: int = 2,
    hidden: int = 32,
    intermediate: int = 64,
    layers: int = 2,
    vocab: int = 64,
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """A tiny model of ``family`` in fp32, eval mode, with nonzero router weights."""
    import importlib

    if family not in _CLASSES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    tf: Any = importlib.import_module("transformers")
    config_class, model_class = (getattr(tf, name) for name in _CLASSES[family])
    kwargs = _config_kwargs(
        family, num_experts=num_experts, top_k=top_k, hidden=hidden, intermediate=intermediate,
        layers=layers, vocab=vocab,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs, **overrides))
    # Some families initialise routers to zero; random routers make routing (and tests) non-trivial.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate.weight", "router.classifier.weight")) and p.dim() == 2:
                p.normal_(0, 0.5)
    return model.float().eval()


def tiny_batch(
    model: nn.Module, batch: int = 2, seq: int = 12, *, pad: int = 0, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random ``input_ids`` and an ``attention_mask`` whose last ``pad`` positions of row 0 are padding."""
    g = torch.Generator().manual_seed(seed)
    config: Any = model.config
    vocab = int(config.vocab_size)
    ids = torch.randint(1, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        mask[0, seq - pad :] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "is_encoder_decoder", False):
        out["decoder_input_ids"] = ids.clone()
        out["decoder_attention_mask"] = mask.clone()
    return out
