"""Merging: exactness on identical experts, weight matching, baselines, budgets and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from moe.layers import MoEError, find_moe_layers
from moe.merge import align_expert, merge_experts
from moe.stats import collect_routing_stats
from moe.tiny import tiny_batch, tiny_moe


def _pair_up(model):
    """Make experts 2j+1 copies of 2j, router rows included."""
    with torch.no_grad():
        for layer in find_moe_layers(model):
            w_in, w_out = (t.clone() for t in layer.get_weights())
            w_in[1::2], w_out[1::2] = w_in[0::2], w_out[0::2]
            layer.set_weights(w_in, w_out)
            layer.router_weight[1::2] = layer.router_weight[0::2]


@pytest.mark.parametrize(
    "family", ["mixtral", pytest.param("qwen2_moe", marks=pytest.mark.slow), "switch"]
)
def test_merging_identical_experts_keeps_logits(family: str) -> None:
    model = tiny_moe(family)
    _pair_up(model)
    batches = [tiny_batch(model, seed=i) for i in range(2)]
    before = [model(**b).logits for b in batches]
    stats = collect_routing_stats(model, batches)
    out = merge_experts(model, stats, num_experts=4)
    for groups in out["groups"].values():
        assert sorted(sorted(g) for g in groups) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for layer in find_moe_layers(model):
        assert layer.num_experts == 4 and layer.num_routes == 8
    for b, y in zip(batches, before, strict=True):
        assert (model(**b).logits - y).abs().max() < 1e-6


def test_weight_matching_recovers_permutation_and_preserves_function() -> None:
    model = tiny_moe("mixtral")
    layer = find_moe_layers(model)[0]
    w_in, w_out = (t.detach() for t in layer.get_weights())
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    other = (w_in[1][:, perm], w_out[1][:, perm])
    x = torch.randn(20, 32)
    # permuting hidden neurons is function-preserving
    y_ref, _ = layer.expert_forward(1, x)
    h = torch.nn.functional.silu(x @ other[0][0].T) * (x @ other[0][1].T)
    torch.testing.assert_close(h @ other[1].T, y_ref, atol=1e-5, rtol=0)
    # aligning the permuted copy onto the original recovers it exactly
    a_in, a_out, found = align_expert((w_in[1], w_out[1]), other)
    assert np.array_equal(perm[found].numpy(), np.arange(64))
    assert torch.equal(a_in, w_in[1]) and torch.equal(a_out, w_out[1])


def test_alignment_beats_naive_averaging_on_permuted_copies() -> None:
    """Two noisy permuted copies of one expert: aligned averaging ~ the expert, naive does not."""
    model = tiny_moe("mixtral")
    layer = find_moe_layers(model)[0]
    with torch.no_grad():
        w_in, w_out = (t.clone() for t in layer.get_weights())
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(64, generator=g)
        noise = 0.05 * w_in[0].std() * torch.randn(w_in[0].shape, generator=g)
        w_in[1] = w_in[0][:, perm] + noise
        w_out[1] = w_out[0][:, perm]
        layer.set_weights(w_in, w_out)
        layer.router_weight[1] = layer.router_weight[0]
    x = torch.randn(64, 32)
    target = layer.expert_forward(0, x)[0].detach()
    errs = {}
    for align in (True, False):
        m = copy.deepcopy(model)
        stats = collect_routing_stats(m, [tiny_batch(m)])
        merge_experts(m, stats, num_experts={"model.layers.0.mlp": 7}, align=align, refit=False)
        lay = find_moe_layers(m)[0]
        merged = int(lay.expert_map[0])
        y = lay.expert_forward(merged, x)[0].detach()
        errs[align] = float((y - target).norm() / target.norm())
    assert errs[True] < 0.05 and errs[False] > 0.5  # 2.5% weight noise left vs scrambled neurons


def test_global_budget_and_bad_input_leave_model_unchanged() -> None:
    model = tiny_moe("olmoe")
    stats = collect_routing_stats(model, [tiny_batch(model)])
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    for bad in (0, 9, {"model.layers.0.mlp": 12}, {"nope": 2}):
        with pytest.raises(MoEError):
            merge_experts(model, stats, num_experts=bad)
    with pytest.raises(MoEError, match="grouping"):
        merge_experts(model, stats, num_experts=4, grouping="spectral")  # type: ignore[arg-type]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snapshot.items())
    assert not hasattr(model.config, "moe_compression") or model.config.moe_compression is None
    out = merge_experts(model, stats, num_experts=4, budget="global")
    assert sum(out["counts"].values()) == 8
    with pytest.raises(MoEError, match="already merged"):
        merge_experts(model, stats, num_experts=2)


@torch.no_grad()
def test_refit_lowers_the_layer_reconstruction_error() -> None:
    model = tiny_moe("mixtral")
    batches = [tiny_batch(model, batch=4, seq=16, seed=i) for i in range(2)]
    stats = collect_routing_stats(model, batches)
    name = "model.layers.0.mlp"
    x = stats[name].sample
    ref = find_moe_layers(model)[0].moe_forward(x)
    errs = {}
    for refit in (False, True):
        m = copy.deepcopy(model)
        merge_experts(m, stats, num_experts=4, refit=refit)
        errs[refit] = float((find_moe_layers(m)[0].moe_forward(x) - ref).norm() / ref.norm())
    assert errs[True] < 0.8 * errs[False]


@pytest.mark.parametrize(
    ("grouping", "combine"),
    [("router_logits", "union"), ("hc", "average"), ("kmeans", "subspace"), ("hc", "union")],
)
def test_every_grouping_and_combine_is_exact_on_identical_pairs(
    grouping: str, combine: str
) -> None:
    """Pairs of identical experts: output clustering finds the pairs; averaging, the union's neuron
    selection (duplicated neurons count once)
    and the shared-subspace merge of a matrix with itself all reproduce the model."""
    model = tiny_moe("mixtral")
    _pair_up(model)
    batches = [tiny_batch(model, seed=i) for i in range(2)]
    before = [model(**b).logits for b in batches]
    out = merge_experts(
        model, collect_routing_stats(model, batches), num_experts=4, grouping=grouping,
        combine=combine, refit=False,
    )  # fmt: skip
    for groups in out["groups"].values():
        assert sorted(sorted(g) for g in groups) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for b, y in zip(batches, before, strict=True):
        assert (model(**b).logits - y).abs().max() < 1e-5


def test_subspace_merge_is_the_projected_frequency_average() -> None:
    """Independent check of our Sub-MoE port: U_r from numpy's SVD of the side-by-side matrices."""
    from moe.merge import _subspace

    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 12, 5, generator=g, dtype=torch.float64)
    f = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    got = _subspace([0, 1, 2], w, f)
    u = np.linalg.svd(np.concatenate(list(w.numpy()), axis=1))[0][:, :5]
    avg = sum(fi * wi for fi, wi in zip(f.numpy(), w.numpy(), strict=True))
    np.testing.assert_allclose(got.numpy(), u @ u.T @ avg, atol=1e-10)


def test_union_keeps_original_neurons_ranked_by_importance() -> None:
    from moe.merge import _union

    w_in = torch.arange(2 * 2 * 4 * 3, dtype=torch.float64).reshape(2, 2, 4, 3)
    w_out = torch.ones(2, 3, 4, dtype=torch.float64)
    importance = torch.tensor([[9.0, 1, 8, 2], [7.0, 6, 0, 5]])
    new_in, new_out = _union([0, 1], w_in, w_out, importance)
    want = torch.stack([w_in[0][:, 0], w_in[0][:, 2], w_in[1][:, 0], w_in[1][:, 1]], dim=1)
    assert torch.equal(new_in, want)
    assert new_out.shape == (3, 4)
