"""The kinds of values moe's settings and passes take, each declared once, and the work estimates.

Light (no torch import): the ``qhybrid moe`` configs (:mod:`moe.commands`), the reproduce stage
(:mod:`moe.stage`), the subject (:mod:`moe.subject`) and the passes' signatures
(:func:`moe.merge.merge_experts`, :func:`moe.drop.drop_experts`,
:func:`moe.compress.compress_experts`, :func:`moe.quantize.quantize_experts`) annotate their
values with these names, so a value refused in one place is refused in all of them. A config
checks itself with ``qhybrid.config.check_fields(self, strict=True)``; a pass checks its
arguments with :func:`check_options` (a :class:`~moe.modeling.MoEError` naming the argument).

Work caps (docs/moe.md#work-caps): a command estimates, before a run folder exists, the CPU-core
seconds of its passes from the model's active parameters per token,

    training       6 x active parameters x tokens (forward and backward)
    a forward      2 x active parameters x tokens (statistics, evaluation, a teacher)
    NAEE search    subsets x cached tokens x 2 x routed-expert parameters of a layer

at :data:`FLOPS` (a conservative single-core rate; the estimate is meant to within a factor of a
few), and refuses a config above ``max_cpu_s`` with the estimate, the keys that drive it and the
override (``--set max_cpu_s=...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from annotated_types import Ge, Gt, Interval, MaxLen, MinLen, Predicate

from qhybrid.config import Unique, check_arguments
from qhybrid.errors import ConfigError

__all__ = [
    "ALLOCATIONS",
    "DEFAULT_MAX_CPU_S",
    "DEFAULT_MAX_MEMORY_GB",
    "COMBINES",
    "CRITERIA",
    "FLOPS",
    "GROUPINGS",
    "Allocation",
    "AverageBits",
    "Bits",
    "BitsChoices",
    "Budget",
    "Combine",
    "Count",
    "CpuSeconds",
    "Criterion",
    "Grouping",
    "KeepRatio",
    "MemoryGB",
    "NonNegativeCount",
    "Positive",
    "RunName",
    "SaveDtype",
    "Seed",
    "Sequences",
    "Storage",
    "SubjectTask",
    "Weighting",
    "check_options",
]

MAX_COUNT = 10**9
FLOPS = 5e9  # flop/s of one core assumed by the work estimates (batched float32 matmuls, loaded)
DEFAULT_MAX_CPU_S = 3600.0
DEFAULT_MAX_MEMORY_GB = 8.0
DOCS = "docs/moe.md#work-caps"

Criterion = Literal[
    "frequency",
    "weighted_frequency",
    "saliency",
    "reap",
    "entropy",
    "weight_norm",
    "stable_rank",
    "exact",
    "greedy",
]  # drop criteria (moe.drop)
Grouping = Literal["router_logits", "outputs", "random", "hc", "kmeans"]  # merge groups
Combine = Literal["average", "union", "subspace"]  # how a merge group becomes one expert
Weighting = Literal["frequency", "router_weighted", "uniform"]  # merge averaging weights
Budget = Literal["uniform", "global"]  # per-layer counts: the same, or split across layers
Allocation = Literal["sensitivity", "frequency", "outlier", "uniform"]  # bit allocation
Storage = Literal["packed", "fake"]  # packed b-bit codes, or rounded float weights (ablation)
SaveDtype = Literal["auto", "float32", "bfloat16", "float16"]  # dtype of a saved result
SubjectTask = Literal["tokens", "stdlib"]  # the subject's task (moe.subject)
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)
GROUPINGS: tuple[Grouping, ...] = get_args(Grouping)
COMBINES: tuple[Combine, ...] = get_args(Combine)
ALLOCATIONS: tuple[Allocation, ...] = get_args(Allocation)

Count = Annotated[int, Interval(ge=1, le=MAX_COUNT)]  # sizes, steps, sequences
NonNegativeCount = Annotated[int, Interval(ge=0, le=MAX_COUNT)]  # 0 = off
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)]  # numpy and torch seeds
Positive = Annotated[float, Gt(0)]  # a finite number > 0
NonNegative = Annotated[float, Ge(0)]  # a finite number >= 0
KeepRatio = Annotated[float, Interval(gt=0, le=1)]  # share of expert neurons kept; 1 = all
Sequences = Annotated[int, Interval(ge=8, le=10_000_000)]  # sequences of a subject's data set
CpuSeconds = Annotated[float, Gt(0)]  # a work cap, CPU-core seconds
MemoryGB = Annotated[float, Gt(0)]  # a memory cap, GB


def _run_name(name: str) -> bool:
    """letters, digits, '-' and '_'"""
    return all(c.isalnum() or c in "-_" for c in name)


RunName = Annotated[str, MinLen(1), MaxLen(64), Predicate(_run_name)]  # a run folder's prefix
Bits = Annotated[int, Interval(ge=1, le=8)]  # a weight's width in bits
BitsChoices = Annotated[tuple[Bits, ...], MinLen(1), Unique]  # the widths an allocation picks from
AverageBits = Annotated[float, Interval(ge=1, le=8)]  # mean bits per expert weight


def check_options(
    fn: Any, values: Mapping[str, Any], *, skip: Sequence[str] = ("model", "stats")
) -> dict[str, Any]:
    """A pass's arguments checked against its signature's annotations (the one declaration of
    their kinds), normalised; a :class:`~moe.modeling.MoEError` names the argument, the value and
    the bound. The model, the statistics and anything in ``skip`` are the pass's own to check."""
    from moe.modeling import MoEError

    try:
        return check_arguments(fn, values, skip=skip)
    except ConfigError as err:
        raise MoEError(str(err)) from None


def forward_seconds(active_params: int, tokens: int, *, train: bool = False) -> float:
    """Estimated CPU-core seconds of ``tokens`` tokens through a model with ``active_params``
    parameters per token (a forward: 2 flops per parameter; training: 6)."""
    return (6.0 if train else 2.0) * active_params * tokens / FLOPS
