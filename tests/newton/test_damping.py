"""Levenberg-Marquardt and kappa-targeted damping."""

from __future__ import annotations

import numpy as np
import pytest

from newton.damping import LevenbergMarquardt, combined_damping, kappa_target_damping
from newton.errors import NewtonError


@pytest.mark.parametrize("target", [2.0, 10.0, 1e3])
def test_kappa_target_damping_meets_the_target_exactly(target):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((30, 10))
    g = m.T @ m
    eig = np.linalg.eigvalsh(g)
    delta = kappa_target_damping(eig[-1], eig[0], target)
    damped = np.linalg.eigvalsh(g + delta * np.eye(10))
    assert damped[-1] / damped[0] == pytest.approx(min(target, eig[-1] / eig[0]), rel=1e-9)


def test_kappa_target_not_needed_gives_zero_and_combined_takes_max():
    assert kappa_target_damping(2.0, 1.0, 10.0) == 0.0
    assert combined_damping(0.5, 2.0, 1.0, 10.0) == 0.5
    assert combined_damping(1e-6, 99.0, 0.0, 100.0) == pytest.approx(1.0)
    assert combined_damping(0.3, 99.0, 0.0, None) == 0.3
    with pytest.raises(NewtonError):
        kappa_target_damping(1.0, 0.0, 1.0)


def test_levenberg_marquardt_rule():
    lm = LevenbergMarquardt(delta=1.0)
    assert lm.update(0.1) == 2.0  # poor model: more damping
    assert lm.update(0.5) == 2.0  # in between: unchanged
    assert lm.update(0.9) == pytest.approx(2.0 / 3.0)  # good model: less damping
    assert lm.update(float("nan")) == pytest.approx(4.0 / 3.0)  # failed step counts as poor
    with pytest.raises(NewtonError):
        LevenbergMarquardt(delta=0.0)
