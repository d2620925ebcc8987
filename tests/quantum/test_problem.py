"""GroverProblem: validation, iteration rules, keys."""

from __future__ import annotations

import math

import pytest

from qhybrid import QHybridError
from quantum import GroverProblem, optimal_iterations


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, ["0"]), {}, "outside 1..60"),
        ((61, ["0" * 61]), {}, "outside 1..60"),
        ((3.0, ["000"]), {}, "must be an int"),
        ((3, ["0101"]), {}, "'0101' has 4 bits but n_qubits=3"),
        ((3, ["0a1"]), {}, "not binary"),
        ((3, ["001", "001"]), {}, "more than once"),
        ((3, []), {}, "marked is empty"),
        ((1, ["0", "1"]), {}, "all 2 basis states"),
        ((3, "001"), {}, "sequence of bitstrings"),
        ((3, [1]), {}, "is not a string"),
        ((3, ["001"]), {"iterations": -1}, "iterations=-1 is negative"),
        ((3, ["001"]), {"iterations": 1.5}, "must be an int"),
        ((3, ["001"]), {"oracle_style": "magic"}, "unknown oracle_style 'magic'"),
        ((3, ["001"]), {"iteration_rule": "guess"}, "unknown iteration rule 'guess'"),
    ],
)
def test_bad_input_raises_qhybrid_error_naming_the_value(args, kwargs, match):
    with pytest.raises(QHybridError, match=match):
        GroverProblem(*args, **kwargs)


def test_marked_are_sorted_and_key_ignores_input_order_and_rule():
    a = GroverProblem(4, ["1010", "0001"])
    b = GroverProblem(4, ("0001", "1010"), iterations=a.iterations)
    assert a.marked == ("0001", "1010")
    assert a == b and a.key == b.key and hash(a) == hash(b)
    assert b.iteration_rule == "explicit" and a.iteration_rule == "floor_pi4"
    assert GroverProblem(4, ["0001"]).key != GroverProblem(4, ["0001"], iterations=1).key
    assert len(a.key) == 64


def test_frozen_and_round_trips_through_dict():
    p = GroverProblem(5, ["00111"], oracle_style="mcp_flag", iteration_rule="qiskit_algorithms")
    with pytest.raises(AttributeError):
        p.n_qubits = 4  # type: ignore[misc]
    q = GroverProblem.from_dict(p.to_dict())
    assert q == p and q.iteration_rule == "qiskit_algorithms"


def test_iteration_rules_match_their_formulas_and_differ_where_documented():
    for n in range(1, 12):
        for t in range(1, min(6, 2**n)):
            assert optimal_iterations(n, t) == math.floor(math.pi / 4 * math.sqrt(2**n / t))
    # pitfall from the anchors: n=2, t=2 -> floor rule 1, qiskit-algorithms rule 0
    assert optimal_iterations(2, 2, "floor_pi4") == 1
    assert optimal_iterations(2, 2, "qiskit_algorithms") == 0
    assert GroverProblem(10, ["0" * 10]).iterations == 25
