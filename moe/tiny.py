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

    tf: Any = importlib.import_module("transformers")

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        num_experts_per_tok=top_k,
    )
    if family == "mixtral":
        cfg = tf.MixtralConfig(
            **common, intermediate_size=intermediate, num_local_experts=num_experts, **overrides
        )
        model = tf.MixtralForCausalLM(cfg)
    elif family == "qwen2_moe":
        cfg = tf.Qwen2MoeConfig(
            **common,
            intermediate_size=intermediate,
            moe_intermediate_size=intermediate,
            num_experts=num_experts,
            shared_expert_intermediate_size=intermediate,
            **overrides,
        )
        model = tf.Qwen2MoeForCausalLM(cfg)
    elif family == "qwen3_moe":
        cfg = tf.Qwen3MoeConfig(
            **common,
            intermediate_size=intermediate,
            head_dim=8,
            moe_intermediate_size=intermediate,
            num_experts=num_experts,
            **overrides,
        )
        model = tf.Qwen3MoeForCausalLM(cfg)
    elif family == "olmoe":
        cfg = tf.OlmoeConfig(
            **common,
            intermediate_size=intermediate,
            num_experts=num_experts,
            eos_token_id=vocab - 1,
            pad_token_id=0,
            **overrides,
        )
        model = tf.OlmoeForCausalLM(cfg)
    elif family == "switch":
        cfg = tf.SwitchTransformersConfig(
            vocab_size=vocab,
            d_model=hidden,
            d_kv=8,
            d_ff=intermediate,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=4,
            num_experts=num_experts,
            encoder_sparse_step=1,
            decoder_sparse_step=1,
            expert_capacity=10_000,
            **overrides,
        )
        model = tf.SwitchTransformersForConditionalGeneration(cfg)
    else:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
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
