"""GroverGPT-2 records: the exact text of a tiny case, round trips, and files that are not records."""

from __future__ import annotations

import json
import math

import pytest

from llm_sim.anchor import anchor_record, export_anchor, import_anchor
from llm_sim.parse import parse_answer
from qhybrid.errors import QHybridError
from quantum import GroverProblem, render

# Written out by hand from dataset_generate_MMS.py's generate_reasoning for n = 2, marked 01
# (qubit 1 is X-conjugated: a 0; qubit 0 is not: a 1), k* = 1 so P = 1.
EXPECTED_N2 = """=== Analysis ===

The Oracle entity is extracted below:

  x _gate_q_1;
  mcmt _gate_q_0, _gate_q_1;
  x _gate_q_1;


=== Block 1 ===
Operation sequence:
x _gate_q_1;
mcmt _gate_q_0, _gate_q_1;
x _gate_q_1;

State construction:
1. x _gate_q_0: Absent → 1, then → 1
2. x _gate_q_1: Present → 0, then → 01
Final state: 01

=== Final Marked States ===
01

=== Simulation Results of the Grover's Algorithm ===
{'01': 1.0000,
 '00': 0.0000,
 '10': 0.0000,
 '11': 0.0000}"""


def test_reasoning_text_of_a_tiny_case():
    r = anchor_record(GroverProblem(2, ["01"]))
    assert r["instruction"] == "" and r["output"] == EXPECTED_N2
    assert r["input"] == render(GroverProblem(2, ["01"]), "qasm3")
    oracle = anchor_record(GroverProblem(2, ["01"]), "oracle")["input"]
    assert oracle.startswith("gate Oracle _gate_q_0, _gate_q_1 {") and oracle.endswith("}")


def test_truncated_dict_lists_marked_then_thirty_states():
    # n = 6, t = 2, k* = floor(pi/4 sqrt(32)) = 4: P = sin^2(9 asin(sqrt(2/64))) = 0.99917
    big_p = math.sin(9 * math.asin(math.sqrt(2 / 64))) ** 2
    text = render(GroverProblem(6, ["000011", "101010"]), "answer_anchor")
    lines = text.split(",\n ")
    assert len(lines) == 30 and lines[0] == f"{{'000011': {round(big_p / 2, 4):.4f}"
    assert lines[1] == "'101010': 0.4996"
    # the rest rounds to 0 at 4 decimals: '%.4e', unquoted, as the anchor writes it
    assert lines[2] == f"'000000': {(1 - big_p) / 62:.4e}" and lines[-1].endswith("}")
    assert parse_answer(text).ok


@pytest.mark.parametrize("kind", ["full", "oracle"])
def test_export_import_round_trip(tmp_path, kind):
    problems = [
        GroverProblem(n, [format(i, f"0{n}b") for i in range(1, t + 1)], k)
        for n, t, k in [(3, 1, None), (5, 2, 1), (8, 3, None), (4, 1, 5)]
    ]
    assert export_anchor(problems, tmp_path / "a.json", kind) == 4
    back = import_anchor(tmp_path / "a.json")
    if kind == "full":  # k is counted from the Oracle applications
        assert back == problems
    else:  # an Oracle-only input carries no k: the anchor assumes k*
        assert [(p.n_qubits, p.marked) for p in back] == [(p.n_qubits, p.marked) for p in problems]
        assert all(p.iterations == p.optimal_iterations for p in back)
    records = json.loads((tmp_path / "a.json").read_text())
    for p, r in zip(problems, records, strict=True):  # the label names the marked states
        assert parse_answer(r["output"]).marked[: p.n_marked] == p.marked


def test_export_refuses_oracles_the_anchor_cannot_read(tmp_path):
    with pytest.raises(QHybridError, match="oracle_style='mcp_flag'"):
        export_anchor([GroverProblem(3, ["101"], oracle_style="mcp_flag")], tmp_path / "a.json")
    with pytest.raises(QHybridError, match="k=0"):
        export_anchor(
            [GroverProblem(3, ["101"]), GroverProblem(3, ["101"], 0)], tmp_path / "a.json"
        )
    with pytest.raises(QHybridError, match="input='loop'"):
        anchor_record(GroverProblem(3, ["101"]), "loop")
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"\xff\xfe not utf-8", "not a JSON list"),
        (b"{not json", "not a JSON list"),
        (b'{"input": "x"}', "non-empty JSON list"),
        (b"[]", "non-empty JSON list"),
        (b'[{"instruction": ""}]', "record 0 has no string 'input'"),
        (b'[{"input": "OPENQASM 3.0;"}]', "record 0: .*defines no gate 'Oracle'"),
        (b'[{"input": "gate Oracle a, b {\\n x a;\\n}"}]', "not a phase oracle"),
        (b'[{"input": "gate Oracle a, b {\\n h a;\\n}"}]', "superposition"),
        (b'[{"input": "gate Oracle a, b {\\n x a; x a;\\n}"}]', "flips no state"),
        (b'[{"input": "gate Oracle a, b {\\n mcmt a;\\n}"}]', "Qiskit cannot build"),
        (b'[{"input": "gate Oracle a, b {\\n foo a, b;\\n}"}]', "'foo' is not defined"),
        (b'[{"input": "gate Oracle a, b {"}]', "malformed OpenQASM"),
    ],
)
def test_import_refuses_files_that_are_not_anchor_records(tmp_path, content, match):
    path = tmp_path / "a.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QHybridError, match=match):
        import_anchor(path)


def test_import_reads_what_the_oracle_computes_not_its_text(tmp_path):
    """The anchor's text rule needed 'mcmt' with the qubits in declared order; the importer reads
    the gate's action: a multi-controlled Z is symmetric, so 'mcmt b, a' marks |11> all the same."""
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"input": "gate Oracle a, b {\n  mcmt b, a;\n}"}]))
    assert import_anchor(path) == [GroverProblem(2, ["11"])]


def _tampered(tmp_path, edit):
    qasm = render(GroverProblem(4, ["0110", "1011"]), "qasm3")
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "", "input": edit(qasm), "output": ""}]))
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # the mcmt body emptied: Qiskit then gives the uniform distribution
        (lambda q: q.replace("  mcx _gate_q_0, _gate_q_1, _gate_q_2, _gate_q_3;\n", "", 1),
         "flips no state"),
        # one Oracle call removed, one added, one Diffuser removed
        (lambda q: q.replace("Oracle q[0], q[1], q[2], q[3];\n", "", 1), "oracle call"),
        (lambda q: q.replace("Diffuser q[0], q[1], q[2], q[3];\n",
                             "Diffuser q[0], q[1], q[2], q[3];\nOracle q[0], q[1], q[2], q[3];\n", 1),
         "has no diffuser after it"),
        (lambda q: q.replace("Diffuser q[0], q[1], q[2], q[3];\n", "", 1), "has no diffuser"),
        # an extra rotation inserted before the first Diffuser
        (lambda q: q.replace("Diffuser q[0]", "rz(0.1) q[2];\nDiffuser q[0]", 1),
         "relative phase"),
    ],
)  # fmt: skip
def test_tampered_anchor_circuits_are_refused(tmp_path, edit, match):
    with pytest.raises(QHybridError, match=match):
        import_anchor(_tampered(tmp_path, edit))


def test_a_changed_marked_state_is_read_as_the_new_problem(tmp_path):
    block = "  x _gate_q_{0};\n  x _gate_q_3;\n  mcmt _gate_q_0, _gate_q_1, _gate_q_2, _gate_q_3;\n"
    old = block.format(0) + "  x _gate_q_0;\n  x _gate_q_3;\n"
    new = "  x _gate_q_3;\n  mcmt _gate_q_0, _gate_q_1, _gate_q_2, _gate_q_3;\n  x _gate_q_3;\n"
    path = _tampered(tmp_path, lambda q: q.replace(old, new, 1))  # no X on q0: 0110 -> 0111
    assert import_anchor(path) == [GroverProblem(4, ["0111", "1011"], 2)]
