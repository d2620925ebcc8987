"""The OpenQASM 3 importer: Grover circuits in every form import to their problem, tampered circuits
are refused or read as what they compute (checked against Qiskit's Statevector), bad input fails
fast with a ValueError subclass and the CLI exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qiskit import qasm3
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import Statevector

from quantum import GroverProblem, render, two_level
from quantum.circuits import (
    MCX_MODES,
    TAMPER_EDITS,
    TAMPER_GATES,
    grover_operator_circuit,
    tamper_circuit,
)
from quantum.qasm_import import (
    QasmImportError,
    QasmLimits,
    circuit_distribution,
    import_grover,
    import_grover_file,
    read_qasm,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*annotated.*:DeprecationWarning"),
    # copies of the MCX classes grover_operator_circuit builds on purpose (mode='recursion', ...)
    pytest.mark.filterwarnings("ignore:.*deprecated as of Qiskit 2.1:DeprecationWarning"),
]
STYLES = ["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"]
ROOT = Path(__file__).resolve().parents[2]


def statevector_probs(text: str) -> np.ndarray:
    """An independent truth: Qiskit's loader and Statevector (loops unrolled), measured qubits."""
    from tests.quantum.test_render import unroll

    qc = unroll(qasm3.loads(text))
    measured = {qc.find_bit(i.clbits[0]).index: qc.find_bit(i.qubits[0]).index
                for i in qc.data if i.operation.name == "measure"}  # fmt: skip
    qc.remove_final_measurements()
    qubits = [measured[c] for c in sorted(measured)] or list(range(qc.num_qubits))
    return Statevector(qc).probabilities(qubits)


def same_problem(found: GroverProblem, p: GroverProblem) -> bool:
    return (found.n_qubits, found.marked, found.iterations) == (p.n_qubits, p.marked, p.iterations)


# --- every Grover form we write, and every form Qiskit's grover_operator writes ------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("fmt", ["qasm3", "qasm3_loop"])
@pytest.mark.parametrize(("n", "marked", "k"), [(1, ["0"], 1), (3, ["011", "110"], None),
                                                (4, ["0000", "1011", "0110"], 3)])  # fmt: skip
def test_our_renderings_import_to_their_problem(fmt, style, n, marked, k):
    p = GroverProblem(n, marked, k, style)
    if n == 1:  # one of two states: which is marked is ambiguous (and Grover is uniform)
        with pytest.raises(QasmImportError, match="ambiguous"):
            import_grover(render(p, fmt))
        return
    found = import_grover(render(p, fmt), simulate="always")
    assert same_problem(found.problem, p) and found.aer_max_abs_diff <= 1e-9
    assert not found.oracle_only and found.num_qubits == n + (style == "mcp_flag")


@pytest.mark.parametrize("style", STYLES)
def test_oracle_only_renderings_import_with_the_optimal_k(style):
    p = GroverProblem(5, ["01100", "10111"], oracle_style=style)
    found = import_grover(render(p, "qasm3_oracle"), flag_qubits=int(style == "mcp_flag"))
    assert same_problem(found.problem, p) and found.oracle_only
    again = import_grover(
        render(p, "qasm3_oracle"), iterations=1, flag_qubits=int(style == "mcp_flag")
    )
    assert again.problem.iterations == 1


@pytest.mark.parametrize("mode", MCX_MODES)
@pytest.mark.parametrize("as_gate", [False, True])
@pytest.mark.parametrize("n", [3, 5])
def test_qiskit_grover_operator_exports_import_to_their_problem(mode, as_gate, n):
    p = GroverProblem(n, ["1" * n, "0" * (n - 1) + "1"])  # all-ones: mcx target h next to a layer
    text = qasm3.dumps(grover_operator_circuit(p, mode, as_gate))
    found = import_grover(text, simulate="always")
    assert same_problem(found.problem, p) and found.aer_max_abs_diff <= 1e-9
    np.testing.assert_allclose(statevector_probs(text), two_level(p).dense(), atol=1e-9, rtol=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 5),
    data=st.data(),
    k=st.integers(1, 3),
    style=st.sampled_from(STYLES),
    fmt=st.sampled_from(["qasm3", "qasm3_loop", "qiskit"]),
)
def test_any_small_grover_circuit_imports_to_its_distribution(n, data, k, style, fmt):
    t = data.draw(st.integers(1, 2**n - 1))
    marked = data.draw(st.lists(st.integers(0, 2**n - 1), min_size=t, max_size=t, unique=True))
    p = GroverProblem(n, [format(i, f"0{n}b") for i in marked], k, style)
    if fmt == "qiskit":
        text = qasm3.dumps(grover_operator_circuit(p, data.draw(st.sampled_from(MCX_MODES[:4]))))
    else:
        text = render(p, fmt)
    if 2 * t == 2**n:  # which half is marked is ambiguous (Grover is uniform for any k)
        with pytest.raises(QasmImportError, match="ambiguous"):
            import_grover(text)
        return
    found = import_grover(text)
    np.testing.assert_allclose(
        two_level(found.problem).dense(), statevector_probs(text), atol=1e-9, rtol=0
    )
    if 2 * t < 2**n:  # O_S = -O_{S^c}: the smaller class is the marked set
        assert same_problem(found.problem, p)


def test_symbolic_proof_reaches_sizes_no_state_vector_holds():
    p = GroverProblem(40, ["01" * 20, "1" * 40])
    found = import_grover(render(p, "qasm3_oracle"))
    assert same_problem(found.problem, p) and found.verified == ("symbolic",)
    q = GroverProblem(24, ["0" * 23 + "1"], 2)
    found = import_grover(render(q, "qasm3_loop"))
    assert same_problem(found.problem, q) and found.aer_max_abs_diff is None
    bad = render(q, "qasm3_loop").replace("  x q0;\n", "", 1)  # an X no longer undone
    with pytest.raises(QasmImportError, match="without undoing them"):
        import_grover(bad)


def test_random_probes_verify_and_refute_blocks_past_the_exact_limit():
    p = GroverProblem(4, ["0110"], 2)
    text = qasm3.dumps(grover_operator_circuit(p, "noancilla"))
    probe_only = QasmLimits(max_exact_qubits=1)
    found = import_grover(text, limits=probe_only)
    assert same_problem(found.problem, p) and "probe" in found.verified
    tampered = text.replace("x q[0];", "rx(0.2) q[0];", 1)
    with pytest.raises(QasmImportError, match="not diagonal|weight"):
        import_grover(tampered, limits=probe_only)
    with pytest.raises(QasmImportError, match="too large to verify"):
        import_grover(text, limits=QasmLimits(max_exact_qubits=1, max_probe_qubits=2))


# --- tampering: refused, or imported as exactly what the circuit computes ------------------------

BASES = {
    "ours": lambda: qasm3.loads(render(GroverProblem(3, ["101", "010"], 2), "qasm3")),
    "qiskit_inline": lambda: grover_operator_circuit(GroverProblem(3, ["110"], 2), "noancilla"),
    "qiskit_gate": lambda: grover_operator_circuit(GroverProblem(3, ["011"], 2), "mcmt", True),
    "flag": lambda: qasm3.loads(render(GroverProblem(3, ["001"], 2, "mcp_flag"), "qasm3")),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(sorted(BASES)),
    how=st.sampled_from(TAMPER_EDITS),
    where=st.integers(0, 10_000),
    gate=st.sampled_from(TAMPER_GATES),
    qubit=st.integers(0, 3),
)
def test_tampered_circuits_are_never_silently_mislabelled(base, how, where, gate, qubit):
    text = qasm3.dumps(tamper_circuit(BASES[base](), how, where, gate, qubit))
    try:
        found = import_grover(text, simulate="never")
    except QasmImportError:
        return  # refused with a reason: fine
    truth = statevector_probs(text)  # imported: it must be what the circuit computes
    np.testing.assert_allclose(two_level(found.problem).dense(), truth, atol=1e-9, rtol=0)


D4 = "gate Diffuser _gate_q_0, _gate_q_1, _gate_q_2, _gate_q_3 {\n"
X4 = "".join(f"  x _gate_q_{i};\n" for i in range(4))
GATE_BODY_EDITS = {
    "oracle emptied": ("  mcx _gate_q_0, _gate_q_1, _gate_q_2, _gate_q_3;\n", ""),
    "oracle x dropped": ("  x _gate_q_3;\n  mcmt", "  mcmt"),
    "diffuser x dropped": (X4 + "  h", X4[len("  x _gate_q_0;\n") :] + "  h"),
    "diffuser h dropped": (D4 + "  h _gate_q_0;\n", D4),
    "mcx rotation changed": ("p(pi/8) _gate_q_0;", "p(pi/7) _gate_q_0;"),
}


@pytest.mark.parametrize("edit", sorted(GATE_BODY_EDITS))
def test_changed_gate_definitions_are_refused_or_read_as_computed(edit):
    text = render(GroverProblem(4, ["0110", "1011"], 2), "qasm3")
    old, new = GATE_BODY_EDITS[edit]
    assert old in text
    changed = text.replace(old, new, 1)
    try:
        found = import_grover(changed)
    except QasmImportError as err:
        assert "not a Grover circuit" in str(err)
        return
    np.testing.assert_allclose(
        two_level(found.problem).dense(), statevector_probs(changed), atol=1e-9
    )


NOT_GROVER = qasm3.dumps(random_circuit(4, 5, 3, measure=True, seed=1))


def test_k_zero_and_non_grover_circuits_still_have_an_exact_distribution():
    text = NOT_GROVER
    with pytest.raises(QasmImportError):
        import_grover(text)
    np.testing.assert_allclose(circuit_distribution(text), statevector_probs(text), atol=1e-10)
    uniform = render(GroverProblem(3, ["101"], 0), "qasm3")
    with pytest.raises(QasmImportError, match="k = 0"):
        import_grover(uniform)
    assert np.allclose(circuit_distribution(uniform), 1 / 8)


def test_simulation_follows_a_gate_definition_not_its_name():
    """Aer's transpiler would run this 'mcx' as the real MCX; the file says it does nothing."""
    text = HEADER.replace("qubit[2]", "qubit[3]") + "x q[0];\nx q[1];\nmcx q[0], q[1], q[2];\n"
    text = text.replace("qubit[3] q;", "gate mcx a, b, c { id a; }\nqubit[3] q;")
    probs = circuit_distribution(text)
    assert probs[0b011] == pytest.approx(1.0) and np.allclose(probs, statevector_probs(text))


@pytest.mark.parametrize("style", STYLES)
def test_circuits_built_in_python_import_too(style):
    """Qiskit objects keep the global phases the exporter drops (grover_operator's pi)."""
    from quantum import build_circuit

    p = GroverProblem(4, ["0110", "1001"], 2, style)
    assert same_problem(import_grover(build_circuit(p), simulate="always").problem, p)
    q = GroverProblem(5, ["01101"], 2)
    for mode in MCX_MODES:
        found = import_grover(grover_operator_circuit(q, mode, as_gate=True))
        assert same_problem(found.problem, q)


def test_outcome_order_follows_the_classical_bits():
    qc = grover_operator_circuit(GroverProblem(3, ["001"], 1), "mcmt")
    swapped = qc.copy_empty_like()
    for inst in qc.data:  # measure q[0] into c[2] and q[2] into c[0]
        if inst.operation.name == "measure":
            c = {0: 2, 2: 0}.get(qc.find_bit(inst.clbits[0]).index, 1)
            swapped.measure(inst.qubits[0], qc.clbits[c])
        else:
            swapped.append(inst)
    found = import_grover(qasm3.dumps(swapped), simulate="always")
    assert found.problem.marked == ("100",) and found.search_qubits == (2, 1, 0)


# --- bad input: a clear QasmImportError (a ValueError) from the API, exit 2 from the CLI ---------

HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\n'
BAD_TEXT = {
    "malformed": (HEADER + "h q[0]\nx q[1];\n", "malformed OpenQASM"),
    "unknown gate": (HEADER + "foo q[0];\n", "'foo' is not defined"),
    "unknown include": ('OPENQASM 3.0;\ninclude "/etc/passwd";\n', "include '/etc/passwd'"),
    "if": (HEADER + "bit[1] c;\nc[0] = measure q[0];\nif (c[0]) { x q[1]; }\n", "'if' statement"),
    "while": (HEADER + "bit[1] c;\nwhile (c[0]) { x q[1]; }\n", "'while' loop"),
    "reset": (HEADER + "reset q[0];\n", "'reset'"),
    "input": ("OPENQASM 3.0;\ninput float theta;\n", "unbound parameters"),
    "mid-circuit measure": (HEADER + "bit[2] c;\nh q[0];\nc[0] = measure q[0];\nx q[0];\n", "after it was measured"),
    "huge register": ("OPENQASM 3.0;\nqubit[1000000000] q;\n", "max_qubits"),
    "computed size": ("OPENQASM 3.0;\nconst int n = 5;\nqubit[n] q;\n", "integer literal"),
    "1e6 statements": (HEADER + "h q[0];" * 1_000_000, "max_bytes"),
    "2e5 statements": (HEADER + "h q[0];" * 200_000, "max_statements"),
    "1e6 loop gates": (HEADER + "for int i in [0:999999] { h q[0]; }\n", "max_operations"),
    "nested loops": (HEADER + "for int i in [0:999] { for int j in [0:999] { h q[0]; } }\n", "max_operations"),
    "control chars": ("OPENQASM 3.0;\x01\x02", "control character"),
    "deep nesting": ("OPENQASM 3.0;\nqubit[1] q;\nrz(" + "(" * 50_000 + "1" + ")" * 50_000 + ") q[0];\n", "max_nesting"),
    "long expression": ("OPENQASM 3.0;\nqubit[1] q;\nrz(" + "1+" * 400_000 + "1) q[0];\n", "max_tokens"),
    "deep unary": ("OPENQASM 3.0;\nqubit[1] q;\nrz(" + "-" * 3000 + "1) q[0];\n", "deeply|malformed|Qiskit cannot"),
    "no layer": (HEADER + "bit[2] c;\nx q[0];\nc[0] = measure q[0];\nc[1] = measure q[1];\n", "Hadamard"),
    "empty": ("", "empty"),
    "definitions only": ('OPENQASM 3.0;\ngate g a { x a; }\n', "no gate 'Oracle'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_bad_text_is_refused_with_a_value_error(case):
    text, match = BAD_TEXT[case]
    with pytest.raises(QasmImportError, match=match) as err:
        import_grover(text)
    assert isinstance(err.value, ValueError)


def test_bad_types_and_limits_are_refused():
    with pytest.raises(QasmImportError, match="must be a str"):
        import_grover(12345)  # type: ignore[arg-type]
    with pytest.raises(QasmImportError, match="binary"):
        import_grover(b"OPENQASM 3.0;\x00\x00")
    with pytest.raises(QasmImportError, match="simulate"):
        import_grover(HEADER, simulate="sometimes")
    with pytest.raises(ValueError, match="max_qubits"):
        QasmLimits(max_qubits=100)
    with pytest.raises(ValueError, match="max_bytes"):
        QasmLimits(max_bytes=-1)


def bad_files(tmp: Path) -> dict[str, tuple[str, str]]:
    sparse = tmp / "sparse_1gb.qasm"
    with open(sparse, "wb") as f:  # 1 GB apparent size, no blocks written
        f.truncate(1 << 30)
    fifo = tmp / "fifo.qasm"
    os.mkfifo(fifo)
    (tmp / "garbage.qasm").write_bytes(bytes(range(256)) * 64)
    (tmp / "latin1.qasm").write_bytes("OPENQASM 3.0; // caf\xe9".encode("latin-1"))
    (tmp / "big.qasm").write_bytes(b"h q[0];\n" * 1_200_000)  # 9.6 MB of text
    return {
        "sparse 1 GB": (str(sparse), "1,073,741,824 bytes"),
        "fifo": (str(fifo), "FIFO"),
        "/dev/zero": ("/dev/zero", "not a regular file"),
        "directory": (str(tmp), "not a regular file"),
        "missing": (str(tmp / "nope.qasm"), "does not exist"),
        "binary garbage": (str(tmp / "garbage.qasm"), "binary"),
        "not utf-8": (str(tmp / "latin1.qasm"), "not UTF-8"),
        "too long": (str(tmp / "big.qasm"), "max_bytes"),
    }


def test_bad_files_are_refused_before_reading(tmp_path):
    for name, (path, match) in bad_files(tmp_path).items():
        with pytest.raises(QasmImportError, match=match):
            read_qasm(path)
        with pytest.raises(ValueError, match=match):
            import_grover_file(path)
        assert name


def test_cli_prints_the_problem_or_one_error_line_and_writes_nothing(tmp_path, capsys):
    from qhybrid.cli import main

    good = tmp_path / "good.qasm"
    good.write_text(render(GroverProblem(3, ["110"]), "qasm3"))
    cases = {**bad_files(tmp_path), "not grover": (str(tmp_path / "ng.qasm"), "not a Grover")}
    (tmp_path / "ng.qasm").write_text(NOT_GROVER)
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the real entry point, once
    ok = subprocess.run([sys.executable, "-m", "qhybrid.cli", "grover", "import", str(good)],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and '"marked": [\n   "110"' in ok.stdout
    capsys.readouterr()
    bad_options = (["--top", "-1"], ["--set", "max_bytes=-3"], ["--set", "nope=1"],
                   ["--flag-qubits", "-1"], ["--iterations", "-2"], ["--simulate", "x"])  # fmt: skip
    runs = [(name, [path], match) for name, (path, match) in cases.items()]
    runs += [(" ".join(o), [str(good), *o], "") for o in bad_options]
    for name, argv, match in runs:
        assert main(["grover", "import", *argv]) == 2, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
        assert match.split("|")[0] in lines[0], (name, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- the anchor's oracle-only input and the slow sweep -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("n", range(2, 11))
def test_sweep_every_form_imports_with_aer_agreement(n):
    """The default suite covers n <= 5; benchmarks/bench_quantum_qasm.py runs n = 2..15."""
    rng = np.random.default_rng(n)
    t = 1 if n == 2 else 2  # t = 2^n / 2 would be ambiguous (and uniform)
    marked = sorted({format(int(i), f"0{n}b") for i in rng.choice(2**n, t, replace=False)})
    p = GroverProblem(n, marked, min(GroverProblem(n, marked).iterations, 6))
    texts = [render(GroverProblem(n, marked, p.iterations, s), f) for s in STYLES
             for f in ("qasm3", "qasm3_loop")]  # fmt: skip
    texts += [qasm3.dumps(grover_operator_circuit(p, m)) for m in MCX_MODES[:4]]
    for text in texts:
        found = import_grover(text, limits=QasmLimits(max_simulate_qubits=22))
        assert same_problem(found.problem, p)
        assert found.aer_max_abs_diff is None or found.aer_max_abs_diff <= 1e-9
