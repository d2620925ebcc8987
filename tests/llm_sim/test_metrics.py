"""Metrics against hand-computed values and a brute-force 2^n expansion."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from llm_sim.metrics import (
    Distribution,
    classical_fidelity,
    grover_two_level,
    hellinger,
    marked_probability_error,
    marked_recall,
    mass_error,
    parse_rate,
    score,
    search_accuracy,
    set_accuracy,
    total_variation,
    true_distribution,
)
from llm_sim.parse import format_closed_form, parse_answer


def problem(n, marked, k=None):
    return SimpleNamespace(n_qubits=n, marked=tuple(marked), iterations=k)


def test_two_level_hand_values():
    # n=2, t=1, k=1: theta = pi/6, (2k+1) theta = pi/2 -> certainty.
    assert grover_two_level(2, 1) == pytest.approx((1.0, 0.0), abs=1e-15)
    # n=3, t=1, k=2: sin^2(5 asin(1/sqrt 8)) = 121/128, the rest share 7/128 over 7 states.
    assert grover_two_level(3, 1) == pytest.approx((121 / 128, 1 / 128), rel=1e-12)
    # k=0: uniform.
    assert grover_two_level(5, 3, 0) == pytest.approx((1 / 32, 1 / 32), rel=1e-12)


def test_closed_form_example_hand_computed():
    # truth n=2 marked 01 (p=1); prediction p_each=0.9 and 0.05 on each of the other 3 states
    pred = parse_answer("marked=01 p_each=0.9 rest_each=0.05")
    true = true_distribution(problem(2, ["01"]))
    assert pred.ok
    assert mass_error(pred) == pytest.approx(0.05)
    assert total_variation(pred, true) == pytest.approx(0.5 * (0.1 + 3 * 0.05))
    assert classical_fidelity(pred, true) == pytest.approx(0.9)
    assert classical_fidelity(pred, true, renormalize=True) == pytest.approx(0.9 / 1.05)
    assert hellinger(pred, true) == pytest.approx(math.sqrt(1 - math.sqrt(0.9 / 1.05)))
    assert search_accuracy(pred, ["01"]) == 1.0
    assert set_accuracy(pred, ["01"]) == 1.0
    assert marked_probability_error(pred, problem(2, ["01"])) == pytest.approx(0.1)


def test_dict_example_with_tie_break():
    # truth n=3 marked 101: 121/128 on it, 1/128 elsewhere. pred: 0.5 on 101 and on 000.
    pred = parse_answer("{'101': 0.5, '000': 0.5}")
    true = true_distribution(problem(3, ["101"]))
    assert total_variation(pred, true) == pytest.approx(63 / 128)
    assert classical_fidelity(pred, true) == pytest.approx(0.5 * 144 / 128)
    # tie at 0.5: the anchors sort ties by integer value, so 000 wins the single top slot
    assert search_accuracy(pred, ["101"]) == 0.0
    assert set_accuracy(pred, ["101"]) == 0.0
    assert marked_recall(pred, ["101"]) == 0.0
    assert mass_error(pred) == pytest.approx(0.0)


def test_sa_structural_cap_but_set_accuracy_fine():
    # n=4, t=4: the perfect answer puts 0.25 on each marked state, below tau=0.3
    marked = ["0001", "0010", "0100", "1000"]
    perfect = true_distribution(problem(4, marked))
    assert search_accuracy(perfect, marked) == 0.0
    assert set_accuracy(perfect, marked) == 1.0
    assert total_variation(perfect, perfect) == 0.0


def test_raw_fidelity_exceeds_one_on_overfull_mass():
    pred = Distribution({"0": 2.0, "1": 2.0})  # mass 4, e.g. an over-summed dict
    true = Distribution({"0": 0.5, "1": 0.5})
    assert classical_fidelity(pred, true) == pytest.approx(4.0)
    assert classical_fidelity(pred, true, renormalize=True) == pytest.approx(1.0)


def test_unlisted_marked_state_ranks_by_rest():
    # rest_each=0.2 beats a listed 0.1, but the unlisted marked state ties with 01 and 10
    pred = Distribution({"00": 0.1}, rest_each=0.2, n_qubits=2)
    assert set_accuracy(pred, ["11"]) == 0.0
    assert marked_recall(pred, ["11"]) == 0.0
    # listed above the rest: it earns its slot
    pred = Distribution({"11": 0.4}, rest_each=0.2, n_qubits=2)
    assert set_accuracy(pred, ["11"]) == 1.0


@pytest.mark.parametrize(
    "pred",
    [
        Distribution({}, rest_each=0.0, n_qubits=3),  # nothing at all
        Distribution({"000": 0.0, "111": 0.0}, rest_each=0.0, n_qubits=3),  # zeros on the marked
        Distribution({}, rest_each=1 / 8, n_qubits=3),  # uniform
        Distribution({"000": 0.3, "111": 0.3, "001": 0.3}, n_qubits=3),  # one unmarked tie
    ],
)
def test_ties_never_earn_set_accuracy(pred):
    marked = ["000", "111"]
    assert set_accuracy(pred, marked) == 0.0
    assert marked_recall(pred, marked) < 1.0


def test_recall_counts_marked_states_strictly_ahead():
    # 111 is strictly above everything, 000 ties with the unlisted rest: recall 1/2
    pred = Distribution({"111": 0.5}, rest_each=0.1, n_qubits=3)
    assert marked_recall(pred, ["000", "111"]) == 0.5
    pred = Distribution({"111": 0.5, "000": 0.2}, rest_each=0.1, n_qubits=3)
    assert marked_recall(pred, ["000", "111"]) == 1.0


def _dense(d, n):
    rest = getattr(d, "rest_each", 0.0)
    v = np.full(2**n, rest)
    for k, p in d.items():
        v[int(k, 2)] = p
    return v


def test_matches_brute_force_expansion():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 6)
        states = [format(i, f"0{n}b") for i in range(2**n)]
        pick = rng.sample(states, rng.randint(1, min(5, 2**n)))
        pred = Distribution(
            {s: rng.random() for s in pick}, rest_each=rng.random() * 0.05, n_qubits=n
        )
        t = rng.randint(1, max(1, 2**n // 2))
        marked = rng.sample(states, t)
        k = rng.randint(0, 4)
        prob = problem(n, marked, k)
        true = true_distribution(prob)
        p, q = _dense(pred, n), _dense(true, n)
        assert q.sum() == pytest.approx(1.0)
        assert total_variation(pred, true) == pytest.approx(0.5 * np.abs(p - q).sum())
        assert classical_fidelity(pred, true) == pytest.approx(np.sqrt(p * q).sum() ** 2)
        pn = p / p.sum()
        assert classical_fidelity(pred, true, True) == pytest.approx(np.sqrt(pn * q).sum() ** 2)
        assert total_variation(pred, true, True) == pytest.approx(0.5 * np.abs(pn - q).sum())
        assert mass_error(pred) == pytest.approx(abs(p.sum() - 1))
        # set accuracy: ties broken against the marked states
        pessimistic = sorted(range(2**n), key=lambda i: (-p[i], states[i] in marked))[:t]
        top = {states[i] for i in pessimistic}
        assert set_accuracy(pred, marked) == float(top == set(marked))
        assert marked_recall(pred, marked) == pytest.approx(len(top & set(marked)) / t)
        # anchor SA@0.3: ties broken by integer value
        order = sorted(range(2**n), key=lambda i: (-p[i], i))[:t]
        kept = {states[i] for i in order if p[i] >= 0.3}
        assert search_accuracy(pred, marked) == pytest.approx(len(kept & set(marked)) / t)


def test_marked_p_answer_fills_in_the_rest_by_normalisation():
    # n = 3, t = 2, p_marked 0.3: the other 6 states share 0.4
    pred = parse_answer(" marked 0 1 1 marked 1 0 0 p_marked 0 . 3 0 0 0")
    assert pred.ok and dict(pred) == {"011": 0.3, "100": 0.3}
    assert pred.rest_each == pytest.approx(0.4 / 6) and mass_error(pred) < 1e-12
    # t p_marked > 1: nothing left for the rest (the mass error shows the overshoot)
    over = parse_answer("marked 0 1 1 marked 1 0 0 p_marked 0 . 9")
    assert over.rest_each == 0.0 and mass_error(over) == pytest.approx(0.8)
    # every state named: no rest at all
    assert parse_answer("marked 0 marked 1 p_marked 0 . 5").rest_each == 0.0
    # a long answer at 60 qubits, scored without a 2^60 loop
    big = parse_answer(f"marked {' '.join('1' * 60)} p_marked 1 . 0 0 0 0")
    assert score(big, problem(60, ["1" * 60]))["set_acc"] == 1.0


def test_no_dense_loop_at_forty_qubits():
    marked = ["1" * 40, "0" * 40]
    true = true_distribution(problem(40, marked))
    pred = parse_answer(format_closed_form(marked, *grover_two_level(40, 2)))
    s = score(pred, problem(40, marked))
    assert s["set_acc"] == 1.0 and s["parsed"] == 1.0
    assert s["tvd"] < 1e-5 and s["cf_renorm"] > 1 - 1e-8
    assert total_variation(true, true) == 0.0


def test_score_worst_values_on_failure_and_wrong_length():
    bad = score(parse_answer("garbage"), problem(3, ["101"]))
    assert bad["parsed"] == 0.0 and bad["tvd"] == 1.0 and bad["set_acc"] == 0.0
    wrong = score(parse_answer("marked=01 p_each=1 rest_each=0"), problem(3, ["101"]))
    assert wrong["parsed"] == 0.0
    assert parse_rate([parse_answer("x"), parse_answer("marked=1 p_each=1 rest_each=0")]) == 0.5


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "not_text"),
        ("hello world", "no_answer"),
        ("{}", "empty_dict"),
        ("marked=0101 p_each=0.2", "truncated_closed_form"),
        ("marked=01,011 p_each=0.2 rest_each=0.1", "inconsistent_bit_length"),
        ("marked=01,01 p_each=0.2 rest_each=0.1", "duplicate_state"),
        ("marked=01 p_each=-0.2 rest_each=0.1", "negative_probability"),
        ("marked=01 p_each=1e999 rest_each=0.1", "bad_number"),
        ("marked=01 p_each=2.3e+03 rest_each=0.1", "probability_above_one"),
        ("{'01': 1.5}", "probability_above_one"),
        ("{'01': 0.5, '011': 0.5}", "inconsistent_bit_length"),
        ("{'01': 0.5, '01': 0.5}", "duplicate_state"),
        # the marked_p token form a model writes
        ("marked 0 1 p_marked", "truncated_closed_form"),
        ("marked 0 1 p_marked n a n", "truncated_closed_form"),
        ("marked 0 1 p_marked 1 e 9 9 9", "bad_number"),
        ("marked 0 1 p_marked 1 . 5", "probability_above_one"),
        ("marked 0 1 p_marked - 0 . 5", "negative_probability"),
        ("marked 0 1 marked 0 1 1 p_marked 0 . 5", "inconsistent_bit_length"),
        ("marked 0 1 marked 0 1 p_marked 0 . 5", "duplicate_state"),
        ("marked 0 1 p_marked 0 . 5 p_rest 2", "probability_above_one"),
    ],
)
def test_parse_failures_report_reason(text, reason):
    pred = parse_answer(text)
    assert not pred.ok
    assert pred.reason == reason


def test_parse_spaced_tokens_and_anchor_cot():
    spaced = "m a r k e d = 0 1 1 , 1 1 0  p _ e a c h = 0 . 4 5 r e s t _ e a c h = 1 . 5 e - 2"
    pred = parse_answer(spaced)
    assert pred.ok and pred.marked == ("011", "110")
    assert pred["011"] == 0.45 and pred.rest_each == 0.015
    cot = (
        "=== Analysis ===\n...\n=== Final Marked States ===\n0110\n"
        "=== Simulation Results of the Grover's Algorithm ===\n{'0110': 0.9613, '0000': 2.6e-03}"
    )
    pred = parse_answer(cot)
    assert pred.ok and pred.marked[0] == "0110" and pred["0000"] == pytest.approx(0.0026)


def test_format_closed_form_round_trip():
    text = format_closed_form(["110", "011"], 0.123456789, 1e-7)
    assert text == "marked=011,110 p_each=0.12346 rest_each=1e-07"
    assert parse_answer(text).rest_each == 1e-7


def test_uniform_prediction_scores_without_listing_states():
    uniform = Distribution({}, rest_each=1 / 8, n_qubits=3)
    s = score(uniform, problem(3, ["101"]))
    assert s["parsed"] == 1.0
    # truth 121/128 on 101, 1/128 elsewhere: TVD = |1/8 - 121/128| = 105/128
    assert s["tvd"] == pytest.approx(105 / 128)
    assert s["mass_error"] == pytest.approx(0.0)
