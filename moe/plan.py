"""The compression plan: what every pass did to the model's structure, saved with the weights.

Each pass appends an operation to ``model.config.moe_compression = {"base": {...}, "ops": [...]}``:

* ``{"op": "drop", "layer": name, "keep": [router outputs kept, in order]}``
* ``{"op": "merge", "layer": name, "expert_map": [R ints], "groups": [[experts]...]}``
* ``{"op": "prune", "layer": name, "intermediate": I'}`` (kept neurons per expert)
* ``{"op": "low_rank", "layer": name, "rank": r}``
* ``{"op": "quantize", "layer": name, "bits": [per expert], "group_size": g}``

:func:`moe.checkpoint.save_compressed` writes the plan beside the weights and
:func:`moe.checkpoint.load_compressed` replays it (:func:`moe.modeling.build_structure`, checked by
:func:`moe.modeling.check_plan`) before loading them, so a compressed model reloads exactly.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from moe.layers import sync_config
from moe.modeling import CONFIG_COUNT_KEYS

__all__ = ["get_plan", "record"]


def get_plan(model: nn.Module) -> dict[str, Any]:
    """The model's plan (a fresh empty one when no pass has run)."""
    plan: dict[str, Any] | None = getattr(_config(model), "moe_compression", None)
    if plan is None:
        return {"base": _base_snapshot(model), "ops": []}
    return copy.deepcopy(plan)


def _base_snapshot(model: nn.Module) -> dict[str, Any]:
    """The config counts to rebuild the stock model with, and what it is (checked on replay)."""
    config = _config(model)
    base: dict[str, Any] = {
        k: getattr(config, k)
        for k in CONFIG_COUNT_KEYS
        if isinstance(getattr(config, k, None), int)
    }
    base["model_type"] = getattr(config, "model_type", None)
    base["architecture"] = type(model).__name__
    return base


def record(model: nn.Module, ops: list[dict[str, Any]]) -> None:
    """Append ``ops`` to the model's plan and resync the config's expert counts."""
    plan = get_plan(model)
    plan["ops"].extend(ops)
    _config(model).moe_compression = plan
    sync_config(model)


def _config(model: nn.Module) -> Any:
    """A transformers model's config (``nn.Module`` does not declare one)."""
    held: Any = model
    return held.config
