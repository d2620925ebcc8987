"""The kinds of values newton's settings take, each declared once, and the check that applies them.

A kind is a type with its bounds (``annotated_types`` metadata, the vocabulary of
:mod:`qhybrid.config`): ``Positive = Annotated[float, Gt(0)]``. Floats are finite unless a kind
says otherwise (``qhybrid.config`` refuses NaN and infinities everywhere). The same kinds annotate
the config dataclasses of the ``qhybrid newton`` commands and the ``newton`` reproduce stage
(:mod:`newton.experiments`, :mod:`newton.commands`, :mod:`newton.stage`) and the arguments of the
public constructors (``QNewton``, ``SchedulerConfig``, ``LevenbergMarquardt``), so a value refused
in one place is refused in all of them.

:func:`check_declared` checks a dataclass instance or a function's arguments against those
annotations and raises :class:`~newton.errors.BadValueError` (a ``ConfigError`` too) naming the
key, the value and the bound.

Work caps. The commands estimate, before anything runs, the CPU-core seconds and the memory they
will take (:mod:`newton.experiments`, ``SolveConfig`` in :mod:`newton.commands`), from flop counts
over :data:`FLOPS` (a conservative single-core rate; the estimate is meant to within a factor of a
few), and refuse a config above ``max_cpu_s`` (default :data:`DEFAULT_MAX_CPU_S`) or
``max_memory_gb`` (default :data:`DEFAULT_MAX_MEMORY_GB`) with the estimate, the keys that drive
it and the override (``--set max_cpu_s=...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval

from newton.errors import BadValueError
from qhybrid.config import check_arguments, check_fields
from qhybrid.config import check_work as qhybrid_check_work
from qhybrid.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_CPU_S",
    "DEFAULT_MAX_MEMORY_GB",
    "FLOPS",
    "ClockQubits",
    "Count",
    "CpuSeconds",
    "Epsilon",
    "Fraction",
    "Damping",
    "Kappa",
    "LearningRate",
    "KappaTarget",
    "KappaTargetOrOff",
    "PriorExamples",
    "Tolerance",
    "MemoryGB",
    "NonNegative",
    "NonNegativeCount",
    "Positive",
    "Seed",
    "Shots",
    "ShotsOrZero",
    "check_declared",
    "check_work",
]

MAX_COUNT = 10**9  # the largest size, width or step count any setting takes
FLOPS = 5e9  # flop/s of one core assumed by the work estimates (batched float32 matmuls, loaded)
DEFAULT_MAX_CPU_S = 3600.0
DEFAULT_MAX_MEMORY_GB = 8.0

Positive = Annotated[float, Gt(0)]  # a finite number > 0
NonNegative = Annotated[float, Ge(0)]  # a finite number >= 0
Fraction = Annotated[float, Interval(gt=0, lt=1)]  # strictly between 0 and 1
Epsilon = Annotated[float, Interval(gt=0, lt=1)]  # a relative precision
Kappa = Annotated[float, Interval(ge=1, le=1e15)]  # a condition number float64 can resolve
LearningRate = Annotated[float, Interval(gt=0, le=1e3)]  # a step size
Damping = Annotated[float, Interval(gt=0, le=1e8)]  # a damping delta (LM's default ceiling)
KappaTarget = Annotated[
    float, Interval(gt=1, le=1e15)
]  # kappa to damp down to (1: infinite damping)
KappaTargetOrOff = Annotated[float, Interval(ge=0, le=1e15)]  # the same, 0 = off (> 1 otherwise)
Tolerance = Annotated[float, Interval(ge=0, le=1)]  # a relative residual
PriorExamples = Annotated[float, Interval(ge=0, le=1e6)]  # the damping floor's prior, in examples
Count = Annotated[int, Interval(ge=1, le=MAX_COUNT)]  # sizes, widths, steps
NonNegativeCount = Annotated[int, Interval(ge=0, le=MAX_COUNT)]  # 0 = off / all
ClockQubits = Annotated[int, Interval(ge=1, le=12)]  # HHL phase-estimation qubits
Shots = Annotated[int, Interval(ge=1, le=10**8)]  # measurement shots per circuit
ShotsOrZero = Annotated[int, Interval(ge=0, le=10**8)]  # shots per circuit; 0 = state vector
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)]  # numpy and torch seeds
CpuSeconds = Annotated[float, Gt(0)]  # a work cap, CPU-core seconds
MemoryGB = Annotated[float, Gt(0)]  # a memory cap, GB


def check_declared(
    target: Any, values: Mapping[str, Any] | None = None, *, skip: Sequence[str] = ()
) -> dict[str, Any]:
    """Check a dataclass instance (``values`` None: its fields, normalised in place) or the
    arguments ``values`` of the function ``target`` against their annotations; return the
    normalised arguments. Raises :class:`BadValueError` naming the key, value and bound."""
    try:
        if values is None:
            if not dataclasses.is_dataclass(target):
                raise TypeError(f"{target!r} is not a dataclass instance")
            check_fields(target, strict=True)
            return {}
        return check_arguments(target, values, skip=skip)
    except ConfigError as err:
        if isinstance(err, BadValueError):
            raise
        raise BadValueError(str(err)) from None


def check_work(
    seconds: float,
    gigabytes: float,
    *,
    max_cpu_s: float,
    max_memory_gb: float,
    what: str,
    drivers: str,
) -> None:
    """Refuse work estimated above ``max_cpu_s`` CPU-core seconds or ``max_memory_gb`` GB, naming
    what drives it and the override (see the module docstring)."""
    docs = "docs/newton.md#work-caps"
    try:
        qhybrid_check_work(seconds, max_cpu_s, what=what, drivers=drivers, docs=docs)
        qhybrid_check_work(gigabytes, max_memory_gb, what=what, drivers=drivers, docs=docs,
                           key="max_memory_gb", unit="GB")  # fmt: skip
    except ConfigError as err:
        raise BadValueError(str(err)) from None


def mlp_parameters(d_in: int, hidden: int, d_out: int) -> int:
    """Parameters of the experiments' MLP ``d_in -> hidden -> d_out`` (weights and biases)."""
    return d_in * hidden + hidden + hidden * d_out + d_out
