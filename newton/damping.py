"""Damping of the Newton system: Levenberg-Marquardt adaptation and kappa-targeted damping.

The damped step solves ``(H + delta I) p = -g``. Two rules set ``delta``:

1. Levenberg-Marquardt: after a step, compare the actual loss decrease with the decrease the
   quadratic model predicted, ``rho = (L(theta) - L(theta + p)) / -(g.p + p.(H + delta I)p / 2)``.
   A poor model (``rho < 1/4``) multiplies delta by ``increase``; a good one (``rho > 3/4``) divides
   it by ``decrease`` (Moré 1978; Martens 2010 uses the same thresholds).
2. kappa-targeted: choose the smallest delta with ``kappa(H + delta I) <= kappa_target``:
   ``(lambda_max + delta) / (lambda_min + delta) = kappa_target`` gives
   ``delta = (lambda_max - kappa_target * lambda_min) / (kappa_target - 1)``.
   This is the knob that trades Newton accuracy (small delta) against quantum cost, which grows
   with kappa; Shampoo's relative ridge ``eps * lambda_max`` is the precedent.

3. the floor: ``delta >= c s / B``, ``s`` the largest curvature seen so far and ``B`` the examples
   of the curvature batch. The GGN of a mean loss over ``B`` examples plus this floor is the GGN
   of the same examples plus an isotropic prior worth ``c`` examples of curvature ``s``: it scales
   with the loss, shrinks as batches (and their noise) grow, and stays put when the loss and with
   it the curvature become tiny, so the step ``-(C + delta I)^{-1} g`` cannot grow without bound
   (Martens 2010 damps with a fixed scale for the same reason).

The step uses ``delta = max(delta_LM, delta_kappa, floor)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Gt

from newton.errors import BadValueError, NewtonError
from newton.values import NonNegative, Positive, check_declared

__all__ = ["LevenbergMarquardt", "combined_damping", "damping_floor", "kappa_target_damping"]


def kappa_target_damping(lambda_max: float, lambda_min: float, kappa_target: float) -> float:
    """The smallest ``delta >= 0`` with ``(lambda_max + delta) / (lambda_min + delta) <= kappa_target``.

    Args:
        lambda_max: largest eigenvalue of the undamped block (an upper estimate is safe).
        lambda_min: smallest eigenvalue (use 0 for PSD curvature when unsure: that is safe).
        kappa_target: the condition number wanted, > 1.
    """
    if not kappa_target > 1 or not math.isfinite(kappa_target):
        raise NewtonError(f"kappa_target={kappa_target} must be a finite number > 1")
    if not (math.isfinite(lambda_max) and math.isfinite(lambda_min)):
        raise NewtonError(f"eigenvalues must be finite, got {lambda_max}, {lambda_min}")
    if lambda_max < lambda_min:
        raise NewtonError(f"lambda_max={lambda_max} < lambda_min={lambda_min}")
    delta = (lambda_max - kappa_target * lambda_min) / (kappa_target - 1.0)
    return max(0.0, delta)


@dataclass
class LevenbergMarquardt:
    """Adaptive damping ``delta`` driven by the ratio of actual to predicted decrease."""

    delta: Positive = 1e-3  # current damping
    increase: Annotated[float, Gt(1)] = 2.0  # factor applied when rho < low
    decrease: Annotated[float, Gt(1)] = 3.0  # divisor applied when rho > high
    low: NonNegative = 0.25
    high: NonNegative = 0.75
    min_delta: NonNegative = 1e-8
    max_delta: Positive = 1e8

    def __post_init__(self) -> None:
        check_declared(self)
        if not self.low < self.high:
            raise BadValueError(f"need 0 <= low < high, got low={self.low}, high={self.high}")
        if not self.min_delta < self.max_delta:
            raise BadValueError(f"max_delta={self.max_delta} must be > min_delta={self.min_delta}")

    def update(self, rho: float) -> float:
        """Adapt delta to the reduction ratio ``rho`` of the last step and return it."""
        if not math.isfinite(rho) or rho < self.low:
            self.delta *= self.increase
        elif rho > self.high:
            self.delta /= self.decrease
        self.delta = min(self.max_delta, max(self.min_delta, self.delta))
        return self.delta


def combined_damping(
    delta_lm: float, lambda_max: float, lambda_min: float, kappa_target: float | None
) -> float:
    """``max(delta_LM, delta_kappa)``; without a target, just ``delta_LM``."""
    if kappa_target is None:
        return delta_lm
    return max(delta_lm, kappa_target_damping(lambda_max, lambda_min, kappa_target))


def reduction_ratio(actual: float, predicted: float) -> float:
    """``rho = actual / predicted`` decrease, NaN-free (a non-positive prediction gives -inf)."""
    if not math.isfinite(actual):
        return -math.inf
    if predicted <= 0:
        return -math.inf
    return actual / predicted


def damping_floor(
    curvature_scale: float, examples: int, prior_examples: float, min_damping: float = 0.0
) -> float:
    """``max(min_damping, prior_examples * curvature_scale / examples)`` (rule 3 above).

    Args:
        curvature_scale: the largest curvature seen so far (a non-finite value counts as 0).
        examples: examples in the curvature batch (at least 1).
        prior_examples: the prior's weight ``c``, in examples; 0 = no relative floor.
        min_damping: an absolute floor beside it.
    """
    s = curvature_scale if math.isfinite(curvature_scale) else 0.0
    return max(min_damping, prior_examples * s / max(examples, 1))
