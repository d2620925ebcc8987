"""Small causal LMs built from transformers configs: a dense Llama and a Mixtral-style MoE.

Sizes run from about 1M to 100M parameters by :class:`ModelConfig` (see :data:`PRESETS`); the models
are ordinary ``LlamaForCausalLM`` / ``MixtralForCausalLM`` objects, so ``save_pretrained`` /
``from_pretrained`` work and the ``moe`` part can compress the Mixtral one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

from annotated_types import Ge, Gt

from qhybrid.config import check_fields
from qhybrid.errors import QHybridError

__all__ = ["PRESETS", "ModelConfig", "build_model", "count_parameters", "preset"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a from-scratch model."""

    arch: str = "llama"  # "llama" (dense) or "mixtral" (MoE)
    hidden_size: Annotated[int, Ge(1)] = 128  # model width d
    num_layers: Annotated[int, Ge(1)] = 4  # decoder blocks
    num_heads: Annotated[int, Ge(1)] = 4  # attention heads (head_dim = hidden_size / num_heads)
    num_kv_heads: Annotated[int, Ge(1)] | None = None  # grouped-query heads; None = num_heads
    intermediate_size: Annotated[int, Ge(1)] = 384  # MLP (per expert) hidden width
    num_experts: Annotated[int, Ge(1)] = 4  # Mixtral: experts per layer
    experts_per_token: Annotated[int, Ge(1)] = 2  # Mixtral: top-k routing
    router_aux_loss_coef: Annotated[float, Ge(0)] = 0.01  # Mixtral: load-balancing loss weight
    max_position_embeddings: Annotated[int, Ge(8)] = 1024  # longest sequence (tokens)
    rope_theta: Annotated[float, Gt(0)] = 10000.0  # RoPE base
    tie_word_embeddings: bool = True  # share input and output embeddings (small vocabularies)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise QHybridError(
                f"num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}"
            )
        if self.arch not in ("llama", "mixtral"):
            raise QHybridError(f"arch={self.arch!r} is not supported; use 'llama' or 'mixtral'")
        if self.hidden_size % self.num_heads:
            raise QHybridError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}"
            )
        if self.arch == "mixtral" and not 1 <= self.experts_per_token <= self.num_experts:
            raise QHybridError(
                f"experts_per_token={self.experts_per_token} must lie in [1, num_experts={self.num_experts}]"
            )


# Named sizes (parameter counts with the 100-token character vocabulary).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384),  # ~0.8M
    "small": ModelConfig(
        hidden_size=256, num_layers=6, num_heads=8, intermediate_size=768
    ),  # ~4.8M
    "medium": ModelConfig(
        hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1536
    ),  # ~25M
    "base": ModelConfig(
        hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072
    ),  # ~85M
}


def preset(name: str, arch: str = "llama", **overrides: Any) -> ModelConfig:
    """A named size for either architecture, e.g. ``preset("tiny", "mixtral")``."""
    if name not in PRESETS:
        raise QHybridError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], arch=arch, **overrides)


def build_model(config: ModelConfig, tokenizer: Any) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` or ``MixtralForCausalLM`` for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if config.arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return MixtralForCausalLM(
        MixtralConfig(
            **common,
            num_local_experts=config.num_experts,
            num_experts_per_tok=config.experts_per_token,
            router_aux_loss_coef=config.router_aux_loss_coef,
            output_router_logits=False,  # lm_loss asks for them in training; off in generate
        )
    )


def count_parameters(model: Any) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
