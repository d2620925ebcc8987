"""Models from configs, batched greedy decoding equals one-at-a-time decoding."""

from __future__ import annotations

import pytest
import torch

from llm_sim.data import Problem, TaskFormat, char_tokenizer, collate, encode_example, encode_prompt
from llm_sim.decode import generate_batched, generate_one_by_one
from llm_sim.model import ModelConfig, build_model, count_parameters, preset
from qhybrid.errors import QHybridError

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_models_train_one_step(arch):
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    batch = collate(
        [encode_example(Problem(3, ("101",)), tok, TaskFormat(fmt="bits"))], tok.pad_token_id
    )
    from llm_sim.training import lm_loss

    loss, extras = lm_loss(model, batch)
    assert loss.isfinite()
    if arch == "mixtral":
        assert extras["aux_loss"] > 0  # router load-balancing loss is part of the objective
        assert type(model).__name__ == "MixtralForCausalLM"
    loss.backward()
    assert all(p.grad is not None for p in model.model.embed_tokens.parameters())


def test_sizes_span_one_to_hundred_million():
    tok = char_tokenizer()
    assert 0.5e6 < count_parameters(build_model(preset("tiny"), tok)) < 1.5e6
    with torch.device("meta"):
        base = build_model(preset("base"), tok)
    assert 80e6 < count_parameters(base) < 120e6


def test_bad_config_names_the_fix():
    with pytest.raises(QHybridError, match="divisible"):
        ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(QHybridError, match="experts_per_token"):
        ModelConfig(arch="mixtral", num_experts=2, experts_per_token=3)


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_batched_generation_matches_one_by_one(arch):
    tok = char_tokenizer()
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    problems = [Problem(3, ("101",)), Problem(6, ("000111", "110000")), Problem(4, ("0110",), 0)]
    prompts = [encode_prompt(p, tok, TaskFormat(fmt="bits")) for p in problems]
    batched = generate_batched(model, tok, prompts, max_new_tokens=12, batch_size=8)
    single = generate_one_by_one(model, tok, prompts, max_new_tokens=12)
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_cuda_generation_and_training_step(arch):
    from llm_sim.training import lm_loss

    tok = char_tokenizer()
    torch.manual_seed(2)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    prompts = [encode_prompt(Problem(4, ("0110",)), tok, TaskFormat(fmt="bits"))]
    cpu = generate_batched(model, tok, prompts, max_new_tokens=8)
    model.to("cuda")
    assert generate_batched(model, tok, prompts, max_new_tokens=8) == cpu
    batch = collate(
        [encode_example(Problem(3, ("101",)), tok, TaskFormat(fmt="bits"))], tok.pad_token_id
    )
    loss, _ = lm_loss(model, {k: v.cuda() for k, v in batch.items()})
    loss.backward()
    assert loss.isfinite()
