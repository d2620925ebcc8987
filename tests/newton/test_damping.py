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


def test_damping_floor_is_a_prior_of_c_examples_of_the_curvature_scale():
    from newton.damping import damping_floor

    # the mean GGN of B examples plus the floor = the mean over B examples plus c examples of s
    assert damping_floor(4.0, 512, 2.5) == pytest.approx(2.5 * 4.0 / 512)
    assert damping_floor(4.0, 256, 2.5) == pytest.approx(2 * damping_floor(4.0, 512, 2.5))
    assert damping_floor(400.0, 512, 2.5) == pytest.approx(100 * damping_floor(4.0, 512, 2.5))
    assert damping_floor(1e-9, 512, 2.5, min_damping=1e-8) == 1e-8
    assert damping_floor(float("nan"), 512, 2.5) == 0.0
    assert damping_floor(4.0, 0, 2.5) == pytest.approx(10.0)  # an empty batch counts as one
