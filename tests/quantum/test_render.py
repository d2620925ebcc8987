"""Renderings: every QASM form re-imports with qiskit.qasm3.loads to the same statevector."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ForLoopOp
from qiskit.quantum_info import Statevector

from qhybrid import QHybridError
from quantum import GroverProblem, exact_distribution, render, two_level
from quantum.circuits import build_oracle

# qiskit-qasm3-import builds `ctrl(m) @ z` with Gate.control(annotated=None), deprecated in 2.3
pytestmark = pytest.mark.filterwarnings("ignore:.*annotated.*:DeprecationWarning")

STYLES = ["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"]
PROBLEMS = [
    (1, ["0"], 1),
    (2, ["10"], None),
    (3, ["011", "110"], None),
    (4, ["0000", "1011", "0110"], 3),
    (5, ["11010"], 0),
    (6, ["100101"], None),
]


def unroll(qc: QuantumCircuit) -> QuantumCircuit:
    """Statevector cannot run control flow: repeat each for-loop body in place."""
    out = qc.copy_empty_like()
    for inst in qc.data:
        if isinstance(inst.operation, ForLoopOp):
            indexset, _, body = inst.operation.params
            for _ in indexset:
                out.compose(unroll(body), inst.qubits, inst.clbits, inplace=True)
        else:
            out.append(inst)
    return out


def loaded_probs(text: str, n: int) -> np.ndarray:
    qc = unroll(qasm3.loads(text))
    qc.remove_final_measurements()
    return Statevector(qc).probabilities(list(range(n)))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("n", "marked", "k"), PROBLEMS)
@pytest.mark.parametrize("fmt", ["qasm3", "qasm3_loop"])
def test_qasm_round_trip_gives_the_same_distribution(fmt, style, n, marked, k):
    p = GroverProblem(n, marked, k, style)
    text = render(p, fmt)
    assert text.startswith("OPENQASM 3.0;")
    np.testing.assert_allclose(loaded_probs(text, n), exact_distribution(p), atol=1e-10, rtol=0)


@pytest.mark.parametrize("style", STYLES)
def test_oracle_rendering_round_trips_to_the_oracle_unitary(style):
    p = GroverProblem(4, ["0011", "1110"], oracle_style=style)
    extra = 1 if style == "mcp_flag" else 0
    text = render(p, "qasm3_oracle")
    args = ", ".join([f"q[{i}]" for i in range(4)] + (["flag[0]"] if extra else []))
    program = text + "qubit[4] q;\n" + ("qubit[1] flag;\nx flag[0];\n" if extra else "")
    program += "".join(f"h q[{i}];\n" for i in range(4)) + f"Oracle {args};\n"
    got = Statevector(qasm3.loads(program))
    ref_qc = QuantumCircuit(4 + extra)
    if extra:
        ref_qc.x(4)
    ref_qc.h(range(4))
    ref_qc.compose(build_oracle(p), inplace=True)
    assert abs(got.inner(Statevector(ref_qc))) == pytest.approx(1.0, abs=1e-10)
    signs = np.sign(got.data[: 2**4 * (1 + extra)].real)
    flipped = {i % 16 for i in np.flatnonzero(np.abs(got.data) > 1e-9) if signs[i] != signs[0]}
    assert flipped == {int(s, 2) for s in p.marked} or flipped == set(range(16)) - {3, 14}


def test_loop_rendering_length_does_not_grow_with_iterations():
    a = render(GroverProblem(10, ["1" * 10], iterations=1), "qasm3_loop")
    b = render(GroverProblem(10, ["1" * 10], iterations=500), "qasm3_loop")
    assert len(b) - len(a) <= 2
    assert len(render(GroverProblem(8, ["1" * 8]), "qasm3")) > 3 * len(
        render(GroverProblem(8, ["1" * 8]), "qasm3_loop")
    )


def test_compact_format_is_documented_shape_and_independent_of_k():
    p = GroverProblem(5, ["01101", "10010"])
    assert render(p, "compact") == (
        "qubits 5 h repeat 3 oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse end measure"
    )
    q = GroverProblem(12, ["0" * 12], iterations=50)
    assert render(q, "compact").startswith("qubits 1 2 h repeat 5 0 oracle")
    for n, t in [(3, 1), (10, 3), (20, 2)]:
        marked = [format(i, f"0{n}b") for i in range(t)]
        toks = render(GroverProblem(n, marked), "compact").split()
        k = GroverProblem(n, marked).iterations
        assert len(toks) == 8 + len(str(n)) + len(str(k)) + t * (n + 1)


def test_answer_encodes_the_two_level_closed_form():
    p = GroverProblem(5, ["01101", "10010"])
    d = two_level(p)
    text = render(p, "answer")
    assert text.startswith("marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked ")
    words = text.split()
    pm = float("".join(words[words.index("p_marked") + 1 : words.index("p_rest")]))
    pr = float("".join(words[words.index("p_rest") + 1 :]))
    assert pm == pytest.approx(d.p_marked_each, rel=1e-4)
    assert pr == pytest.approx(d.p_rest_each, rel=1e-4)
    # exact zero stays zero (n=3, t=2, k=1 lands on pi/2)
    assert render(GroverProblem(3, ["010", "101"]), "answer").endswith("p_rest 0 . 0 0 0 0 e + 0 0")


def test_answer_parses_back_and_p_rest_follows_from_normalisation():
    from quantum.render import parse_answer_text

    p = GroverProblem(7, ["0000001", "1110000"], iterations=4)
    d = two_level(p)
    got = parse_answer_text(render(p, "answer"))
    assert got.marked == p.marked
    assert got.p_marked_each == pytest.approx(d.p_marked_each, rel=1e-4)
    assert got.p_rest_each == pytest.approx(d.p_rest_each, rel=1e-4)
    short = render(p, "answer").split(" p_rest")[0]
    assert parse_answer_text(short).p_rest_each == pytest.approx(d.p_rest_each, rel=1e-3)
    for bad in [
        "",
        "marked 0 2 p_marked 1",
        "marked 0 1 p_marked x",
        "p_marked 0 . 5",
        "marked 0 1 marked 1 p_marked 0 . 5",
        "hello",
    ]:
        with pytest.raises(QHybridError):
            parse_answer_text(bad)


def test_anchor_answer_is_the_grovergpt2_truncated_dict():
    import ast

    p = GroverProblem(6, ["000011", "101010"])
    d = ast.literal_eval(render(p, "answer_anchor"))
    assert list(d)[:2] == ["000011", "101010"] and len(d) == 30
    assert list(d)[2:5] == ["000000", "000001", "000010"]
    assert d["000011"] == round(two_level(p).p_marked_each, 4)
    small = ast.literal_eval(render(GroverProblem(2, ["01"]), "answer_anchor"))
    assert small == {"01": 1.0, "00": 0.0, "10": 0.0, "11": 0.0}
    tiny = render(GroverProblem(20, ["1" * 20]), "answer_anchor")
    assert "e-" in tiny  # p_rest rounds to 0 at 4 decimals: written in scientific notation


def test_unknown_format_is_a_qhybrid_error():
    with pytest.raises(QHybridError, match="unknown rendering format 'qasm2'"):
        render(GroverProblem(2, ["01"]), "qasm2")


def test_scaled_register_is_k_over_two_to_the_half_n():
    from quantum.render import scaled_register

    # 804 / 2^10 = 0.110 0100100b: octal digit 6, the seven bits below it LSB first, I = 0
    assert scaled_register(20, 804) == "0 0 1 0 0 1 0 | 6 . 0"
    assert scaled_register(5, 3) == "| 3 : 0"  # odd n: ":"; 3 / 8 = 0.011b
    assert scaled_register(2, 7) == "| 4 . 3"  # 7 / 2 = 3.1b: the one fraction bit, zero-padded
    assert scaled_register(6, 2**10 + 1) == "| 1 . 1 2 8"  # 1025 / 8 = 128.125
    for n in (2, 5, 6, 7, 20, 60):
        c = (n + 1) // 2
        for k in (0, 1, 5, 2**c - 1, 3 * 2**c + 1, 2**40 + 3):
            low, rest = scaled_register(n, k).split("|")
            octal, point, *whole = rest.split()
            value = int("".join(whole)) + int(octal) / 8
            value += sum(int(b) * 2.0 ** (i - c) for i, b in enumerate(low.split()))
            assert value == pytest.approx(k / 2**c, rel=1e-12)
            assert point == ".:"[n % 2] and len(low.split()) == max(0, c - 3)


def test_scaled_window_carries_the_rotation_at_every_n():
    """sin^2((2k+1) asin sqrt(t/N)) at a k whose register ends in the same six tokens differs
    between n = 6 and n = 20 by less than one n = 6 grid step (the format's premise)."""
    from quantum.render import scaled_register

    for t in (1, 3, 6):
        for k6 in range(0, 16):
            k20 = k6 * 2**7 + 37  # same window, other low bits
            w6, w20 = (scaled_register(n, k).split("|")[1] for n, k in ((6, k6), (20, k20)))
            assert w6 == w20
            p6 = two_level(GroverProblem(6, [format(i, "06b") for i in range(t)], k6))
            p20 = two_level(GroverProblem(20, [format(i, "020b") for i in range(t)], k20))
            step = 2 * np.arcsin(np.sqrt(t / 64))  # phase step between consecutive k at n = 6
            assert abs(p6.success_probability - p20.success_probability) <= 2 * step


def test_compact_renderings_parse_back_exactly():
    from quantum.render import parse_compact

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 61))
        t = int(rng.integers(1, 4))
        marked = sorted({"".join(rng.choice(["0", "1"], n)) for _ in range(t)})
        if 2 * len(marked) >= 2**n:
            continue
        k = int(rng.choice([0, 1, int(rng.integers(0, 2**20)), 2**45 + 1]))
        style = str(rng.choice(["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"]))
        p = GroverProblem(n, marked, k, style)
        assert parse_compact(render(p, "compact")) == p
        assert parse_compact(render(p, "compact_scaled")) == p


@pytest.mark.parametrize(
    "text",
    [
        "",
        "h oracle x_mcz_x flip 0 1 1 diffuse repeat | 1 . 0 measure",  # "." for odd n
        "h oracle x_mcz_x flip 0 1 1 diffuse repeat 1 | 1 : 0 measure",  # low bits at c = 2
        "h oracle x_mcz_x flip 0 1 1 diffuse repeat | 1 : 0 measure",  # octal 1 = 0.001: c = 2
        "h oracle x_mcz_x flip 0 1 1 diffuse repeat | 8 : 0 measure",  # not an octal digit
        "h oracle x_mcz_x flip 0 1 1 diffuse repeat | 2 : 0 1 measure",  # leading zero
        "h oracle x_mcz_x flip 0 1 1 flip 0 1 diffuse repeat | 2 : 0 measure",  # ragged blocks
        "qubits 3 h repeat 1 oracle x_mcz_x flip 0 1 1 diffuse end",  # truncated
    ],
)
def test_parse_compact_refuses_what_is_not_a_rendering(text):
    from quantum.render import parse_compact

    with pytest.raises(QHybridError):
        parse_compact(text)
