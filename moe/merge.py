"""Expert merging: MC-SMoE's M-SMoE (Li et al., arXiv 2310.01334), with the anchor's bugs fixed.

Per MoE layer with budget G experts:

1. **Dominant experts**: the G most frequently selected experts (routing counts on calibration data),
   skipping exact duplicates of an already chosen dominant (router-logit cosine >= 0.9999), which
   merge into it for free.
2. **Grouping**: every other expert joins the dominant expert whose router-logit column is most similar,
   ``cos(i, j) = Σ_t l_ti l_tj / (‖l_i‖ ‖l_j‖)`` over all calibration tokens (exact, from the streamed
   Gram matrix).
3. **Alignment**: each member is permuted onto *its group's dominant expert* (the anchor aligns to expert
   0) by weight matching: neuron features ``F_e[i] = [gate row i | up row i | down column i]``, and the
   permutation solving ``max_π Σ_i F_d[i] · F_m[π(i)]`` (Hungarian, ``scipy.optimize.linear_sum_assignment``).
   Permuting hidden neurons of a SwiGLU/MLP expert leaves its function unchanged.
4. **Averaging**: ``W_g = Σ_e f_e W_e / Σ_e f_e`` over the aligned members, f = routing frequency.
5. **Removal**: the experts tensors shrink to G; the router keeps its R outputs and ``expert_map``
   sends each one to its group, so a token's router choices are preserved.

Budgets: ``num_experts`` per layer (uniform), a mapping layer -> count, or ``budget="global"`` where the
total ``num_experts × layers`` is split by globally ranking normalised frequencies (MC-SMoE's adaptive
merging), at least ``min_per_layer`` per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from moe.budget import resolve_budget
from moe.layers import MoEError, MoELayer, apply_expert, check_layers, find_moe_layers
from moe.plan import record
from moe.stats import LayerStats, RoutingStats
from moe.values import (
    Budget,
    Combine,
    Grouping,
    NonNegative,
    Seed,
    Weighting,
    check_options,
)

logger = logging.getLogger(__name__)

__all__ = ["align_expert", "merge_experts", "plan_groups"]


def cluster_groups(
    s: LayerStats, num_groups: int, outputs: torch.Tensor, method: str, seed: int = 0
) -> list[list[int]]:
    """Clusters of experts from their outputs ``outputs (E, T, H)`` on the cached calibration inputs,
    each led by its most frequent member (first element), clusters ordered by that member:

    * ``"hc"`` — our port of HC-SMoE (Chen et al., arXiv 2410.08589): average-linkage hierarchical
      clustering of each expert's mean output over the calibration tokens, cosine distance, cut at
      ``num_groups`` clusters (``scipy.cluster.hierarchy``);
    * ``"kmeans"`` — our port of Sub-MoE's adaptive clustering (Li et al., arXiv 2506.23266): k-means
      (scikit-learn, 10 restarts) on the unit-normalised flattened outputs, i.e. on their cosine
      similarity.
    """
    e = outputs.shape[0]
    if num_groups >= e:
        return [[i] for i in range(e)]
    if method == "hc":
        from scipy.cluster.hierarchy import cut_tree, linkage

        mean = nn.functional.normalize(outputs.double().mean(1), dim=1).numpy()
        labels = cut_tree(linkage(mean, method="average", metric="cosine"), n_clusters=num_groups)[
            :, 0
        ]
    else:
        from sklearn.cluster import KMeans

        flat = nn.functional.normalize(outputs.double().flatten(1), dim=1).numpy()
        labels = KMeans(n_clusters=num_groups, n_init=10, random_state=seed).fit(flat).labels_
    groups = []
    for c in sorted(set(labels.tolist())):
        members = [i for i in range(e) if labels[i] == c]
        lead = max(members, key=lambda i: (float(s.counts[i]), -i))
        groups.append([lead] + [i for i in members if i != lead])
    return sorted(groups, key=lambda g: g[0])


def plan_groups(
    s: LayerStats,
    num_groups: int,
    *,
    grouping: Grouping = "router_logits",
    seed: int = 0,
    duplicate_cos: float = 0.9999,
    output_cos: torch.Tensor | None = None,
) -> list[list[int]]:
    """Groups of experts, each led by its dominant expert (first element), dominants in index order
    (MC-SMoE's dominant-expert grouping; ``"hc"`` / ``"kmeans"`` go through :func:`cluster_groups`)."""
    freq = s.counts
    e = s.num_routes
    cos = s.logit_cosine()
    order = sorted(range(e), key=lambda i: (-float(freq[i]), i))
    # Most frequent first, but skip experts whose router column duplicates a chosen dominant
    # (cos >= duplicate_cos): they merge into it at no cost. Falls back to frequency order.
    chosen: list[int] = []
    for i in order:
        if len(chosen) < num_groups and all(float(cos[i, d]) < duplicate_cos for d in chosen):
            chosen.append(i)
    for i in order:
        if len(chosen) < num_groups and i not in chosen:
            chosen.append(i)
    dominants = sorted(chosen)
    groups = {d: [d] for d in dominants}
    rest = [i for i in range(e) if i not in groups]
    if grouping == "router_logits":
        for i in rest:
            best = max(dominants, key=lambda d: (float(cos[i, d]), -d))
            groups[best].append(i)
    elif grouping == "outputs":
        if output_cos is None:
            raise MoEError("grouping='outputs' needs the layer's expert output similarities")
        for i in rest:
            best = max(dominants, key=lambda d: (float(output_cos[i, d]), -d))
            groups[best].append(i)
    elif grouping == "random":
        rng = np.random.default_rng(seed)
        for i in rest:
            groups[dominants[int(rng.integers(len(dominants)))]].append(i)
    else:
        raise MoEError(f"grouping={grouping!r}; use 'router_logits', 'outputs' or 'random'")
    return [groups[d] for d in dominants]


def _neuron_features(w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """(I, P·H + H) rows ``[w_in[:, i] flattened | w_out[:, i]]`` of one expert."""
    p, i, h = w_in.shape
    return torch.cat([w_in.permute(1, 0, 2).reshape(i, p * h), w_out.T], dim=1)


def align_expert(
    ref: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Permute the hidden neurons of ``other`` = (w_in (P, I, H), w_out (H, I)) onto ``ref``.

    Returns the permuted ``(w_in, w_out)`` and the permutation ``perm`` (neuron i of the result is
    neuron ``perm[i]`` of ``other``), which maximises ``Σ_i F_ref[i] · F_other[perm[i]]``.
    """
    from scipy.optimize import linear_sum_assignment

    f_ref = _neuron_features(*ref).double()
    f_oth = _neuron_features(*other).double()
    score = (f_ref @ f_oth.T).cpu().numpy()  # (I, I)
    if not np.isfinite(score).all():
        raise MoEError("expert weights are not finite; cannot align neurons")
    try:
        rows, cols = linear_sum_assignment(score, maximize=True)
    except ValueError as err:  # scipy's infeasible / invalid cost matrix
        raise MoEError(f"neuron alignment failed: {err}") from err
    perm = cols[np.argsort(rows)]
    idx = torch.as_tensor(perm, device=other[0].device)
    return other[0][:, idx], other[1][:, idx], perm


@torch.no_grad()
def expert_outputs(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """(E, T, H) every expert's output on the cached inputs x (T, H)."""
    x = x.to(layer.device, layer.router_weight.dtype)
    return torch.stack([layer.expert_forward(e, x)[0] for e in range(layer.num_experts)]).cpu()


def _output_cosine(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """(E, E) cosine similarity of the experts' flattened outputs on the cached inputs."""
    outs = nn.functional.normalize(expert_outputs(layer, x).flatten(1).double(), dim=1)
    return outs @ outs.T


def _union(
    group: list[int], w_in: torch.Tensor, w_out: torch.Tensor, importance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ours: the merged expert keeps the I most important hidden neurons of the union of its members
    (importance ``E[h_i²] ‖w_out[:, i]‖²`` summed over the tokens routed to the member, so frequent
    members weigh more); each kept neuron is an original one, not an average. Neurons with identical
    input weights in several members are one neuron (importances added, down columns averaged by
    importance). Returns ``(w_in (P, I, H), w_out (H, I))`` — down columns to be refitted."""
    n = w_in.shape[2]
    merged: dict[bytes, list[Any]] = {}  # input-weight bytes -> [importance, w_in col, Σ imp·down]
    for m in group:
        for i in range(n):
            col, imp = w_in[m][:, i], float(importance[m, i]) + 1e-30
            key = col.detach().cpu().contiguous().numpy().tobytes()
            if key not in merged:
                merged[key] = [0.0, col, torch.zeros_like(w_out[m][:, i], dtype=torch.float64)]
            merged[key][0] += imp
            merged[key][2] += imp * w_out[m][:, i].double()
    best = sorted(merged.values(), key=lambda t: -t[0])[:n]
    new_in = torch.stack([c for _, c, _ in best], dim=1)
    new_out = torch.stack([(acc / imp).to(w_out.dtype) for imp, _, acc in best], dim=1)
    if new_in.shape[1] < n:  # fewer distinct neurons than a slot: pad with silent neurons
        pad = n - new_in.shape[1]
        new_in = torch.cat([new_in, new_in.new_zeros(new_in.shape[0], pad, new_in.shape[2])], 1)
        new_out = torch.cat([new_out, new_out.new_zeros(new_out.shape[0], pad)], 1)
    return new_in, new_out


def _subspace(group: list[int], w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Our port of Sub-MoE's subspace merging for one matrix kind, ``w (E, out, in)``: the joint SVD
    of the members side by side, ``[W_1 … W_k] = U Σ [V_1ᵀ … V_kᵀ]``, keeps the shared left basis
    ``U_r`` of one expert's rank r = min(out, in) and merges the expert-specific parts by frequency,
    ``W = U_r Σ_r (Σ_i f_i V_{i,r})ᵀ = U_r U_rᵀ Σ_i f_i W_i``."""
    mats = [w[m].double() for m in group]
    u, _, _ = torch.linalg.svd(torch.cat(mats, dim=1), full_matrices=False)
    r = min(mats[0].shape)
    ur = u[:, :r]
    avg = sum(float(fi) * mi for fi, mi in zip(f.tolist(), mats, strict=True))
    return ur @ (ur.T @ avg)


@torch.no_grad()
def refit_down(
    layer: MoELayer,
    x: torch.Tensor,
    emap: torch.Tensor,
    merged_in: torch.Tensor,
    merged_out: torch.Tensor,
    ridge: float,
) -> torch.Tensor:
    """Least-squares down projections for merged experts (output matching on calibration inputs).

    For group g with merged up/gate weights, hidden activations ``h_t = φ(x_t)`` and, over the cached
    tokens t that route to any member, the group's original routed output
    ``y_t = Σ_{m ∈ g ∩ topk(t)} w_tm E_m(x_t)`` and its total gate weight ``a_t = Σ w_tm``:

        W_down = argmin_W Σ_t ‖y_t − a_t W h_t‖² + λ ‖W − W_avg‖²,

    solved in closed form (``λ = ridge · mean diag(Σ a_t² h_t h_tᵀ)``; the prior is the averaged
    matrix, so groups with few tokens stay close to plain averaging).
    """
    x = x.to(merged_in.device, merged_in.dtype)
    if x.numel() == 0:
        return merged_out
    _, w, idx = layer.route(x)
    w = w.to(torch.float64)
    out = merged_out.clone()
    for g in range(merged_in.shape[0]):
        in_group = emap.to(idx.device)[idx] == g  # (T, k)
        a = (w * in_group).sum(-1)  # (T,)
        tok = torch.where(a > 0)[0]
        if tok.numel() == 0:
            continue
        xt = x[tok]
        y = torch.zeros(tok.numel(), x.shape[1], dtype=torch.float64, device=x.device)
        for m in torch.where(emap == g)[0].tolist():
            wm = (w[tok] * (idx[tok] == m)).sum(-1)  # (T_g,)
            sel = wm > 0
            if sel.any():
                y[sel] += wm[sel, None] * layer.expert_forward(m, xt[sel])[0].double()
        _, h = apply_expert(layer.act, merged_in[g], merged_out[g], xt)
        ha = h.double() * a[tok, None]  # (T_g, I)
        gram = ha.T @ ha
        lam = ridge * float(gram.diagonal().mean()) + 1e-12
        prior = merged_out[g].double()  # (H, I)
        rhs = y.T @ ha + lam * prior  # (H, I)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        try:
            sol = torch.linalg.solve(gram + lam * eye, rhs.T).T
        except RuntimeError as err:  # torch.linalg.LinAlgError: singular normal matrix
            raise MoEError(f"least-squares refit of {layer.name} group {g} failed: {err}") from err
        out[g] = sol.to(out.dtype)
    return out


def _average(
    group: list[int], w_in: torch.Tensor, w_out: torch.Tensor, wts: torch.Tensor, align: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """MC-SMoE: members aligned to the dominant (first) member, then averaged with weights ``wts``."""
    d = group[0]
    acc_in = torch.zeros_like(w_in[d], dtype=torch.float64)
    acc_out = torch.zeros_like(w_out[d], dtype=torch.float64)
    for member, wt in zip(group, wts.tolist(), strict=True):
        mi, mo = w_in[member], w_out[member]
        if align and member != d:
            mi, mo, _ = align_expert((w_in[d], w_out[d]), (mi, mo))
        acc_in += wt * mi.double()
        acc_out += wt * mo.double()
    return acc_in, acc_out


def _groups(
    layer: MoELayer, s: LayerStats, n_groups: int, grouping: Grouping, seed: int
) -> list[list[int]]:
    if grouping in ("hc", "kmeans"):
        return cluster_groups(s, n_groups, expert_outputs(layer, s.sample), grouping, seed)
    out_cos = _output_cosine(layer, s.sample) if grouping == "outputs" else None
    return plan_groups(s, n_groups, grouping=grouping, seed=seed, output_cos=out_cos)


def _merge_layer(
    layer: MoELayer,
    s: LayerStats,
    n_groups: int,
    *,
    grouping: Grouping,
    combine: Combine,
    align: bool,
    weighting: Weighting,
    refit: bool,
    ridge: float,
    seed: int,
) -> dict[str, Any]:
    """Merged weights of one layer, computed without changing it (applied by :func:`merge_experts`)."""
    groups = _groups(layer, s, n_groups, grouping, seed + layer.index)
    w_in, w_out = (t.detach() for t in layer.get_weights())
    f = {"frequency": s.counts, "router_weighted": s.weighted_counts}.get(weighting)
    f = torch.ones(s.num_routes, dtype=torch.float64) if f is None else f
    importance = s.act_sq.to(w_out.device) * w_out.double().pow(2).sum(1)  # (E, I)
    new_in, new_out = [], []
    for group in groups:
        wts = f[group] + 1e-12  # unused experts still count a little: no 0/0
        wts = wts / wts.sum()
        if combine == "union":
            gi, go = _union(group, w_in, w_out, importance)
        elif combine == "subspace":
            p, i, h = w_in.shape[1:]
            flat = w_in.reshape(w_in.shape[0], p * i, h)
            gi, go = _subspace(group, flat, wts).reshape(p, i, h), _subspace(group, w_out, wts)
        else:
            gi, go = _average(group, w_in, w_out, wts, align)
        new_in.append(gi.to(w_in.dtype))
        new_out.append(go.to(w_out.dtype))
    emap = torch.empty(layer.num_routes, dtype=torch.long)
    for g, group in enumerate(groups):
        emap[group] = g
    merged_in, merged_out = torch.stack(new_in), torch.stack(new_out)
    if refit:
        merged_out = refit_down(layer, s.sample, emap, merged_in, merged_out, ridge)
    if not (bool(merged_in.isfinite().all()) and bool(merged_out.isfinite().all())):
        raise MoEError(f"merging layer {layer.name} produced non-finite weights; try refit=False")
    return {"groups": groups, "emap": emap, "w_in": merged_in, "w_out": merged_out}


def _write_merged(
    layers: list[MoELayer], merged: dict[str, dict[str, Any]], how: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write every layer's merged weights and expert map (nothing here can fail: every shape was
    checked first); the plan's ops, each with ``how`` it was merged."""
    ops = []
    for layer in layers:
        m = merged[layer.name]
        layer.set_weights(m["w_in"], m["w_out"])
        layer.set_expert_map(m["emap"])
        ops.append(
            {
                "op": "merge",
                "layer": layer.name,
                "expert_map": m["emap"].tolist(),
                "groups": m["groups"],
                **how,
            }
        )
        logger.info("merged %s: %d -> %d experts", layer.name, layer.num_routes, len(m["groups"]))
    return ops


def merge_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    num_experts: int | Mapping[str, int],
    budget: Budget = "uniform",
    grouping: Grouping = "router_logits",
    combine: Combine = "average",
    align: bool = True,
    weighting: Weighting = "frequency",
    refit: bool = True,
    ridge: NonNegative = 1e-2,
    seed: Seed = 0,
) -> dict[str, Any]:
    """Merge each MoE layer's experts into ``num_experts`` groups, in place (see module docstring).

    All or nothing: every layer is validated and its merged weights computed before the first layer
    changes, so any error leaves the model bit-identical.

    Args:
        model: a transformers MoE model; ``stats`` must have been collected on it as it is now.
        stats: from :func:`moe.stats.collect_routing_stats` (bound to the weights by fingerprint).
        num_experts: experts kept per layer, or a mapping layer name -> count (see :mod:`moe.budget`).
        budget: ``"uniform"`` or ``"global"`` (``num_experts`` × layers split by frequency).
        grouping: ``"router_logits"`` (MC-SMoE), ``"outputs"`` (each member joins the dominant whose
            outputs are most similar), ``"hc"`` (our HC-SMoE port), ``"kmeans"`` (our Sub-MoE
            clustering port) or ``"random"``.
        combine: ``"average"`` (MC-SMoE: align, then frequency-weighted average), ``"union"`` (ours:
            the most important neurons of the members' union, see :func:`_union`; best with the
            refit) or ``"subspace"`` (our Sub-MoE port, :func:`_subspace`).
        align: permute members onto their dominant expert before averaging (False: naive averaging).
        weighting: averaging weights — routing frequency, router-weighted frequency, or uniform.
        refit: after averaging, refit each merged expert's down projection by ridge regression on the
            cached calibration inputs so that it reproduces its group's routed output — a
            least-squares fit on calibration data, not part of MC-SMoE (see :func:`refit_down`).
        ridge: ridge strength, relative to the mean diagonal of the normal matrix.
        seed: for random grouping.

    Returns:
        ``{"groups": {layer: [[experts]...]}, "counts": {layer: G}}``.

    Raises:
        MoEError: no MoE layers, non-finite weights, stats of other weights, an impossible budget,
            an already merged layer, or a failed alignment / refit; the model is then unchanged.
    """
    check_options(merge_experts, locals(), skip=("model", "stats", "num_experts"))
    layers = find_moe_layers(model)
    check_layers(layers, writable=True)
    for layer in layers:
        if layer.has_expert_map:
            raise MoEError(
                f"layer {layer.name} is already merged; merge once, from the unmerged model"
            )
    stats.check(layers)
    counts = resolve_budget(
        layers,
        num_experts,
        budget,
        floor=lambda _: 1,
        scores=lambda layer: stats[layer.name].counts,
    )
    with torch.no_grad():
        merged = {
            layer.name: _merge_layer(
                layer,
                stats[layer.name],
                counts[layer.name],
                grouping=grouping,
                combine=combine,
                align=align,
                weighting=weighting,
                refit=refit,
                ridge=ridge,
                seed=seed,
            )
            for layer in layers
        }
        how = {"align": align, "grouping": grouping, "combine": combine, "refit": refit}
        record(model, _write_merged(layers, merged, how))
    return {"groups": {k: v["groups"] for k, v in merged.items()}, "counts": counts}
