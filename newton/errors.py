"""Errors of the ``newton`` part: each names the bad value, the rule and the fix."""

from __future__ import annotations

from qhybrid.errors import QHybridError

__all__ = [
    "NewtonError",
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
