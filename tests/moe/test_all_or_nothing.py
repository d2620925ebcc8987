"""All or nothing: every pass rejects every bad input before it changes the model (bit-identical)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe.compress import compress_experts
from moe.drop import drop_experts
from moe.layers import MoEError, find_moe_layers
from moe.merge import merge_experts
from moe.modeling import build_structure
from moe.plan import get_plan
from moe.quantize import quantize_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


def _bits(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every state tensor as raw bytes (NaN compares equal to itself bit for bit)."""
    return {
        k: v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).clone()
        for k, v in model.state_dict().items()
    }


def _assert_untouched(
    model: torch.nn.Module, before: dict[str, torch.Tensor], config: dict
) -> None:
    after = _bits(model)
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert model.config.to_dict() == config


def _rejects(model: torch.nn.Module, call: Callable[[], Any], match: str) -> None:
    before, config = _bits(model), model.config.to_dict()
    with pytest.raises(MoEError, match=match):
        call()
    _assert_untouched(model, before, config)


PASSES: dict[str, Callable[..., Any]] = {
    "merge": lambda m, s, **kw: merge_experts(
        m, s, num_experts=kw.get("n", 4), **kw.get("extra", {})
    ),
    "drop": lambda m, s, **kw: drop_experts(
        m, s, num_experts=kw.get("n", 4), **kw.get("extra", {})
    ),
    "compress": lambda m, s, **kw: compress_experts(m, s, keep_ratio=0.5),
    "quantize": lambda m, s, **kw: quantize_experts(m, s, avg_bits=3.0),
}


@pytest.fixture(scope="module")
def subject() -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]], Any]:
    model = tiny_moe("mixtral")
    batches = [tiny_batch(model, batch=2, seq=12, seed=i) for i in range(2)]
    return model, batches, collect_routing_stats(model, batches)


@pytest.mark.parametrize("name", list(PASSES))
def test_foreign_statistics_of_the_same_shape_are_rejected(name: str, subject) -> None:
    model, batches, _ = subject
    other = tiny_moe("mixtral", seed=1)  # same architecture and shapes, other weights
    foreign = collect_routing_stats(other, batches)
    m = copy.deepcopy(model)
    _rejects(m, lambda: PASSES[name](m, foreign), "other weights")


@pytest.mark.parametrize("name", ["stats", *PASSES])
def test_nan_in_the_last_layer_changes_no_layer(name: str, subject) -> None:
    model, batches, stats = subject
    m = copy.deepcopy(model)
    layer = find_moe_layers(m)[-1]
    with torch.no_grad():
        layer.experts.down_proj[3, 0, 0] = float("nan")
    if name == "stats":
        _rejects(m, lambda: collect_routing_stats(m, batches), "NaN")
    else:
        _rejects(m, lambda: PASSES[name](m, stats), "NaN")


@pytest.mark.parametrize("name", ["merge", "drop"])
@pytest.mark.parametrize(
    "n, budget, match",
    [
        (0, "uniform", "cannot keep 0"),
        (9, "uniform", "cannot keep 9"),
        (4.5, "uniform", "integer"),
        ("4", "uniform", "integer"),
        (True, "uniform", "integer"),
        (9, "global", "must lie between"),
        (0, "global", "must lie between"),
        (2.0, "global", "integer"),
        ({"model.layers.0.mlp": 12}, "uniform", "cannot keep 12"),
        ({"model.layers.9.mlp": 2}, "uniform", "unknown layers"),
        (4, "adaptive", "'budget' = 'adaptive' is not one of"),
    ],
)
def test_every_bad_budget_is_rejected(name: str, n: Any, budget: str, match: str, subject) -> None:
    model, _, stats = subject
    m = copy.deepcopy(model)
    _rejects(m, lambda: PASSES[name](m, stats, n=n, extra={"budget": budget}), match)


@pytest.mark.parametrize("name", ["stats", *PASSES])
def test_a_dense_model_is_rejected(name: str) -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    dense = transformers.LlamaForCausalLM(cfg).eval()
    batch = tiny_batch(dense)
    if name == "stats":
        _rejects(dense, lambda: collect_routing_stats(dense, [batch]), "no sparse-MoE layer")
    else:
        stats = collect_routing_stats(tiny_moe("mixtral"), [batch])
        _rejects(dense, lambda: PASSES[name](dense, stats), "no sparse-MoE layer")


def test_calibration_batches_that_do_not_fit_become_moe_errors(subject) -> None:
    model, _, _ = subject
    m = copy.deepcopy(model)
    _rejects(
        m, lambda: collect_routing_stats(m, [{"input_ids": torch.tensor([[1, 999]])}]), "failed"
    )
    _rejects(m, lambda: collect_routing_stats(m, []), "no batches")


def test_passes_after_packing_are_refused_before_any_change(subject) -> None:
    model, batches, _ = subject
    m = copy.deepcopy(model)
    quantize_experts(m, collect_routing_stats(m, batches), avg_bits=3.0)
    stats = collect_routing_stats(m, batches)
    for name in PASSES:
        _rejects(m, lambda name=name: PASSES[name](m, stats), "PackedExperts")


def test_iterative_drop_checks_its_batches_first(subject) -> None:
    model, _, stats = subject
    m = copy.deepcopy(model)
    bad = [{"input_ids": torch.tensor([[1, 999]])}]
    _rejects(m, lambda: drop_experts(m, stats, num_experts=4, rounds=2, batches=bad), "failed")


def _plan_of(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    m = copy.deepcopy(model)
    drop_experts(m, collect_routing_stats(m, batches), num_experts=6)
    merge_experts(m, collect_routing_stats(m, batches), num_experts=3)
    return get_plan(m)


def test_a_plan_that_fails_late_builds_nothing(subject) -> None:
    model, batches, _ = subject
    plan = _plan_of(model, batches)
    bad = copy.deepcopy(plan)
    bad["ops"][-1]["expert_map"] = [0, 1, 2]  # the last op no longer fits; the first ones do
    m = copy.deepcopy(model)
    _rejects(m, lambda: build_structure(m, bad), "does not fit")
    build_structure(m, plan)  # the good plan replays
    assert [layer.num_experts for layer in find_moe_layers(m)] == [3, 3]


def test_a_plan_for_another_architecture_or_type_is_rejected(subject) -> None:
    model, batches, _ = subject
    plan = _plan_of(model, batches)
    qwen = tiny_moe("qwen3_moe")
    _rejects(qwen, lambda: build_structure(qwen, plan), "model_type 'mixtral'")
    wrong_arch = copy.deepcopy(plan)
    wrong_arch["base"]["model_type"] = None
    _rejects(qwen, lambda: build_structure(qwen, wrong_arch), "architecture 'MixtralForCausalLM'")
    m = copy.deepcopy(model)
    _rejects(
        m,
        lambda: build_structure(m, {"ops": [{"op": "explode", "layer": "model.layers.0.mlp"}]}),
        "unknown plan op",
    )
    _rejects(m, lambda: build_structure(m, {"ops": "drop everything"}), "list 'ops'")


def test_after_a_merge_the_config_agrees_with_every_weight(subject) -> None:
    model, batches, stats = subject
    m = copy.deepcopy(model)
    merge_experts(m, stats, num_experts={"model.layers.0.mlp": 3, "model.layers.1.mlp": 5})
    for layer in find_moe_layers(m):
        assert m.config.num_local_experts == layer.router_weight.shape[0] == 8
        assert m.config.moe_experts_per_layer[layer.name] == layer.experts.gate_up_proj.shape[0]
        assert m.config.moe_experts_per_layer[layer.name] == layer.experts.down_proj.shape[0]
        assert m.config.moe_routes_per_layer[layer.name] == layer.num_routes


@pytest.mark.parametrize("storage", ["packed", "fake"])
@pytest.mark.parametrize("allocation", ["uniform", "sensitivity"])
@pytest.mark.parametrize("group_size", [24, 1000, 0, True])
def test_a_group_size_that_does_not_fit_changes_nothing(
    storage: str, allocation: str, group_size: Any, subject
) -> None:
    model, _, stats = subject
    m = copy.deepcopy(model)
    call = lambda: quantize_experts(  # noqa: E731
        m, stats, avg_bits=3.0, allocation=allocation, storage=storage, group_size=group_size
    )
    _rejects(m, call, "group_size")
