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
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from moe.budget import resolve_budget
from moe.layers import MoEError, MoELayer, apply_expert, check_layers, find_moe_layers
from moe.plan import record
from moe.stats import LayerStats, RoutingStats

logger = logging.getLogger(__name__)

__all__ = ["align_expert", "merge_experts", "plan_groups"]


def plan_groups(
    s: LayerStats,
    num_groups: int,
    *,
    grouping: Literal["router_logits", "outputs", "random"] = "router_logits",
    seed: int = 0,
    duplicate_cos: float = 0.9999,
    output_cos: torch.Tensor | None = None,
) -> list[list[int]]:
    """Groups of experts, each led by its dominant expert (first element), dominants in index order."""
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
def _output_cosine(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """(E, E) cosine similarity of the experts' outputs on the cached inputs (HC-SMoE's signal)."""
    x = x.to(layer.device, layer.router_weight.dtype)
    outs = torch.stack([layer.expert_forward(e, x)[0].flatten() for e in range(layer.num_experts)])
    outs = nn.functional.normalize(outs.double(), dim=1)
    return (outs @ outs.T).cpu()


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


def _merge_layer(
    layer: MoELayer,
    s: LayerStats,
    n_groups: int,
    *,
    grouping: str,
    align: bool,
    weighting: str,
    refit: bool,
    ridge: float,
    seed: int,
) -> dict[str, Any]:
    """Merged weights of one layer, computed without changing it (applied by :func:`merge_experts`)."""
    out_cos = _output_cosine(layer, s.sample) if grouping == "outputs" else None
    groups = plan_groups(
        s,
        n_groups,
        grouping=grouping,  # type: ignore[arg-type]
        seed=seed + layer.index,  # type: ignore[arg-type]
        output_cos=out_cos,
    )
    w_in, w_out = (t.detach() for t in layer.get_weights())
    f = {"frequency": s.counts, "router_weighted": s.weighted_counts}.get(weighting)
    f = torch.ones(s.num_routes, dtype=torch.float64) if f is None else f
    new_in, new_out = [], []
    for group in groups:
        d = group[0]
        acc_in = torch.zeros_like(w_in[d], dtype=torch.float64)
        acc_out = torch.zeros_like(w_out[d], dtype=torch.float64)
        wts = f[group] + 1e-12  # unused experts still count a little: no 0/0
        wts = wts / wts.sum()
        for member, wt in zip(group, wts.tolist(), strict=True):
            mi, mo = w_in[member], w_out[member]
            if align and member != d:
                mi, mo, _ = align_expert((w_in[d], w_out[d]), (mi, mo))
            acc_in += wt * mi.double()
            acc_out += wt * mo.double()
        new_in.append(acc_in.to(w_in.dtype))
        new_out.append(acc_out.to(w_out.dtype))
    emap = torch.empty(layer.num_routes, dtype=torch.long)
    for g, group in enumerate(groups):
        emap[group] = g
    merged_in, merged_out = torch.stack(new_in), torch.stack(new_out)
    if refit:
        merged_out = refit_down(layer, s.sample, emap, merged_in, merged_out, ridge)
    if not (bool(merged_in.isfinite().all()) and bool(merged_out.isfinite().all())):
        raise MoEError(f"merging layer {layer.name} produced non-finite weights; try refit=False")
    return {"groups": groups, "emap": emap, "w_in": merged_in, "w_out": merged_out}


def merge_experts(
    model: nn.Module,
    stats: RoutingStats,
    *,
    num_experts: int | Mapping[str, int],
    budget: Literal["uniform", "global"] = "uniform",
    grouping: Literal["router_logits", "outputs", "random"] = "router_logits",
    align: bool = True,
    weighting: Literal["frequency", "router_weighted", "uniform"] = "frequency",
    refit: bool = True,
    ridge: float = 1e-2,
    seed: int = 0,
) -> dict[str, Any]:
    """Merge each MoE layer's experts into ``num_experts`` groups, in place (see module docstring).

    All or nothing: every layer is validated and its merged weights computed before the first layer
    changes, so any error leaves the model bit-identical.

    Args:
        model: a transformers MoE model; ``stats`` must have been collected on it as it is now.
        stats: from :func:`moe.stats.collect_routing_stats` (bound to the weights by fingerprint).
        num_experts: experts kept per layer, or a mapping layer name -> count (see :mod:`moe.budget`).
        budget: ``"uniform"`` or ``"global"`` (``num_experts`` × layers split by frequency).
        grouping: ``"router_logits"`` (MC-SMoE), ``"outputs"`` (HC-SMoE's signal) or ``"random"``.
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
    layers = find_moe_layers(model)
    check_layers(layers, writable=True)
    for layer in layers:
        if layer.has_expert_map:
            raise MoEError(
                f"layer {layer.name} is already merged; merge once, from the unmerged model"
            )
    stats.check(layers)
    if weighting not in ("frequency", "router_weighted", "uniform"):
        raise MoEError(f"weighting={weighting!r}; use 'frequency', 'router_weighted' or 'uniform'")
    if grouping not in ("router_logits", "outputs", "random"):
        raise MoEError(f"grouping={grouping!r}; use 'router_logits', 'outputs' or 'random'")
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
                align=align,
                weighting=weighting,
                refit=refit,
                ridge=ridge,
                seed=seed,
            )
            for layer in layers
        }
        ops = []
        for layer in layers:  # nothing below can fail: every shape was checked above
            m = merged[layer.name]
            layer.set_weights(m["w_in"], m["w_out"])
            layer.set_expert_map(m["emap"])
            ops.append(
                {
                    "op": "merge",
                    "layer": layer.name,
                    "expert_map": m["emap"].tolist(),
                    "groups": m["groups"],
                    "align": align,
                    "grouping": grouping,
                    "refit": refit,
                }
            )
            logger.info(
                "merged %s: %d -> %d experts", layer.name, layer.num_routes, len(m["groups"])
            )
    record(model, ops)
    return {"groups": {k: v["groups"] for k, v in merged.items()}, "counts": counts}
