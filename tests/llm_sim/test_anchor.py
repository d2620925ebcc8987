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
        (b'[{"input": "OPENQASM 3.0;"}]', "record 0: no 'gate Oracle"),
        (b'[{"input": "gate Oracle a, b {\\n x a;\\n}"}]', "no 'mcmt' operation"),
        (b'[{"input": "gate Oracle a, b {\\n mcmt b, a;\\n}"}]', "is not 'mcmt a, b'"),
    ],
)
def test_import_refuses_files_that_are_not_anchor_records(tmp_path, content, match):
    path = tmp_path / "a.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QHybridError, match=match):
        import_anchor(path)
