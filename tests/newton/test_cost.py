"""Cost models: the published query counts, and the crossover search."""

from __future__ import annotations

import math

import pytest

from newton.cost import (
    ClassicalCostModel,
    QuantumCostModel,
    crossover_size,
    paper_mode_costs,
    query_count,
)
from newton.errors import NewtonError


@pytest.mark.parametrize(
    "model,expected",
    [
        ("jennings", (5.7e3, 5.7e4, 8.6e6)),  # Q-Newton's transcription, alpha = 1, eps = 1e-2
        ("jennings_qb", (2.7e3, 9.9e3, 2.7e5)),  # qubrabench's transcription
        ("dalzell", (6.1e2, 6.1e3, 6.1e5)),  # 56 kappa + 1.05 kappa ln(1/eps)
    ],
)
def test_query_counts_match_the_research_note(model, expected):
    for kappa, q in zip((10, 100, 1e4), expected, strict=True):
        assert query_count(model, kappa, 1e-2) == pytest.approx(q, rel=0.05)


def test_jennings_alpha_scaling_and_hhl():
    assert query_count("jennings", 100, 1e-2, alpha=10) == pytest.approx(5.0e6, rel=0.05)
    assert query_count("hhl", 10, 1e-2) == pytest.approx(1e4)
    with pytest.raises(NewtonError):
        query_count("jennings", 0.5, 1e-2)
    with pytest.raises(NewtonError):
        query_count("nope", 10, 1e-2)


def test_quantum_estimate_io_terms():
    bare = QuantumCostModel(include_io=False).estimate(n=1024, kappa=10, d=8, epsilon=1e-2)
    full = QuantumCostModel(include_io=True).estimate(n=1024, kappa=10, d=8, epsilon=1e-2)
    assert bare.shots == 1 and full.shots == math.ceil(1024 / 1e-4)
    assert full.total_s > bare.total_s * full.shots  # loading adds to every run
    c = ClassicalCostModel(flops=1e9)
    assert c.cholesky_s(1000) == pytest.approx((1e9 / 3 + 2e6) / 1e9)


def test_paper_mode_reproduces_kappa_1e4_rule():
    # a dense 1e4 x 1e4 block: quantum wins below kappa ~ 1e4 and loses above
    for kappa, quantum_wins in [(1e3, True), (5e3, True), (2e4, False), (1e5, False)]:
        q, c = paper_mode_costs(n=10**4, kappa=kappa, d=10**4, epsilon=1e-2)
        assert (q < c) is quantum_wins


def test_crossover_moves_with_gate_time():
    c = ClassicalCostModel(flops=1e10)
    fast = QuantumCostModel(gate_time_s=1e-15, include_io=False)
    slow = QuantumCostModel(gate_time_s=1e-9, include_io=False)
    n_fast = crossover_size(
        kappa=100, epsilon=1e-2, quantum=fast, classical=c, d=8, against="cholesky"
    )
    n_slow = crossover_size(
        kappa=100, epsilon=1e-2, quantum=slow, classical=c, d=8, against="cholesky"
    )
    assert n_fast < n_slow < math.inf
    # with read-out and against the best classical solver (CG on a sparse block) it never wins
    io = QuantumCostModel(gate_time_s=1e-9, include_io=True)
    assert (
        crossover_size(kappa=100, epsilon=1e-2, quantum=io, classical=c, d=8, n_max=1e9) == math.inf
    )
