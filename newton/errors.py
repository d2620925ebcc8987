"""Errors of the ``newton`` part: each names the bad value, the rule and the fix."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from qhybrid.errors import ConfigError, QHybridError

__all__ = [
    "BadValueError",
    "NewtonError",
    "check_choice",
    "check_int",
    "check_number",
    "BoundsError",
    "NonFiniteError",
    "NotRealError",
    "NotPositiveDefiniteError",
    "NotSquareError",
    "NotSymmetricError",
    "TooLargeForHHLError",
]


class NewtonError(QHybridError):
    """Base of every user-facing error raised by ``newton``."""


class NotSquareError(NewtonError):
    """A matrix given to a linear solver or estimator is not square (or b does not match it)."""


class NotSymmetricError(NewtonError):
    """A matrix that must be symmetric (Hermitian) is not, beyond round-off."""


class NotPositiveDefiniteError(NewtonError):
    """A solver that needs a symmetric positive definite matrix got an indefinite or singular one."""


class TooLargeForHHLError(NewtonError):
    """A system is larger than the state-vector HHL simulation supports (N <= 16)."""


class NonFiniteError(NewtonError):
    """NaN or infinity in a matrix, a right-hand side, a gradient or a loss."""


class NotRealError(NewtonError):
    """Complex input where a real symmetric system is required (it is refused, never cast)."""


class BoundsError(NewtonError):
    """Eigenvalue bounds that do not contain the spectrum they claim to bound."""


class BadValueError(NewtonError, ConfigError):
    """A setting or argument outside its meaningful range (n <= 0, kappa < 1, a NaN, ...).

    Also a :class:`~qhybrid.errors.ConfigError`: the config machinery passes it through as it is.
    """


def check_int(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else :class:`BadValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValueError(f"{name}={value!r} must be an integer >= {low}")
    if value < low or (high is not None and value > high):
        rng = f"in {low}..{high}" if high is not None else f">= {low}"
        raise BadValueError(f"{name}={value} must be an integer {rng}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a finite float in the given interval, else :class:`BadValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValueError(f"{name}={value!r} must be a number")
    v = float(value)
    ok = math.isfinite(v) and (v > low if open_low else v >= low)
    ok = ok and (v < high if open_high else v <= high)
    if not ok:
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise BadValueError(
            f"{name}={value!r} must be a finite number in {lo}{low:g}, {high:g}{hi}"
        )
    return v


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else :class:`BadValueError` listing them."""
    options = list(choices)
    if value not in options:
        raise BadValueError(f"{name}={value!r} must be one of {options}")
    return value
