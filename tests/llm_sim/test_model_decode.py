"""Models from configs; the decoding loop against transformers' generate and a no-cache forward."""

from __future__ import annotations

import pytest
import torch

from llm_sim.data import TaskFormat, collate, encode_example, encode_prompt
from llm_sim.decode import generate_batched, generate_one_by_one
from llm_sim.model import ModelConfig, build_model, count_parameters, preset
from llm_sim.positions import PositionScheme, position_ids
from qhybrid.errors import QHybridError
from quantum import GroverProblem, build_tokenizer

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
PROBLEMS = [
    GroverProblem(3, ["101"]),
    GroverProblem(6, ["000111", "110000"], oracle_style="mcp_flag"),
    GroverProblem(4, ["0110"], 0),
    GroverProblem(11, ["01101011010"]),
]


def task(kind: str = "coupled") -> TaskFormat:
    return TaskFormat(positions=PositionScheme(kind=kind))


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_models_train_one_step(arch):
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    batch = collate([encode_example(PROBLEMS[0], tok, task())], tok.pad_token_id, task().positions)
    from llm_sim.training import lm_loss

    loss, extras = lm_loss(model, batch)
    assert loss.isfinite()
    if arch == "mixtral":
        assert extras["aux_loss"] > 0  # router load-balancing loss is part of the objective
        assert type(model).__name__ == "MixtralForCausalLM"
    loss.backward()
    assert all(p.grad is not None for p in model.model.embed_tokens.parameters())


def test_sizes_span_one_to_hundred_million():
    tok = build_tokenizer()
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
@pytest.mark.parametrize("kind", ["coupled", "sequential", "nope"])
def test_batched_generation_matches_one_by_one(arch, kind):
    tok = build_tokenizer()
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    prompts = [encode_prompt(p, tok, task(kind)) for p in PROBLEMS]
    scheme = task(kind).positions
    budgets = [12, 3, 1, 7]  # one budget per prompt: rows stop at their own
    batched = generate_batched(model, tok, prompts, scheme, max_new_tokens=budgets, batch_size=8)
    single = generate_one_by_one(model, tok, prompts, scheme, max_new_tokens=budgets)
    assert batched == single
    assert [len(tok.tokenize(t)) <= b for t, b in zip(batched, budgets, strict=True)] == [True] * 4
    assert generate_batched(model, tok, prompts, scheme, max_new_tokens=12) == (
        generate_one_by_one(model, tok, prompts, scheme, max_new_tokens=12)
    )


def test_sequential_decoding_equals_transformers_generate():
    tok = build_tokenizer()
    torch.manual_seed(3)
    model = build_model(ModelConfig(**TINY), tok).eval()
    for p in PROBLEMS:
        prompt = encode_prompt(p, tok, task("sequential"))
        ours = generate_batched(
            model, tok, [prompt], task("sequential").positions, max_new_tokens=10
        )
        ref = model.generate(
            torch.tensor([prompt.input_ids]),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        text = tok.decode(ref[0, len(prompt.input_ids) :], skip_special_tokens=True)
        assert ours[0] == text


def test_cached_coupled_decoding_equals_a_full_forward():
    """Each greedy token is the argmax of one uncached forward over the whole sequence so far."""
    tok = build_tokenizer()
    torch.manual_seed(4)
    model = build_model(ModelConfig(**TINY), tok).eval()
    scheme = task().positions
    prompt = encode_prompt(PROBLEMS[1], tok, task())
    text = generate_batched(model, tok, [prompt], scheme, max_new_tokens=8)[0]
    ids = list(prompt.input_ids)
    for _ in range(8):
        pos = position_ids(prompt.layout, len(ids), scheme)
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                position_ids=torch.tensor([pos]),
            ).logits
        nxt = int(logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        ids.append(nxt)
    assert text == tok.decode(ids[len(prompt.input_ids) :], skip_special_tokens=True)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_cuda_generation_and_training_step(arch):
    from llm_sim.training import lm_loss

    tok = build_tokenizer()
    torch.manual_seed(2)
    model = build_model(ModelConfig(arch=arch, **TINY), tok)
    scheme = task().positions
    prompts = [encode_prompt(p, tok, task()) for p in PROBLEMS]
    cpu = generate_batched(model, tok, prompts, scheme, max_new_tokens=8)
    model.to("cuda")
    assert generate_batched(model, tok, prompts, scheme, max_new_tokens=8) == cpu
    batch = collate([encode_example(PROBLEMS[0], tok, task())], tok.pad_token_id, scheme)
    loss, _ = lm_loss(model, {k: v.cuda() for k, v in batch.items()})
    loss.backward()
    assert loss.isfinite()
