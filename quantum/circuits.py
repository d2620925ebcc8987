"""Qiskit 2.x circuits for Grover problems: oracles in four styles and the full search circuit.

Only current Qiskit parts are used: :class:`~qiskit.circuit.library.MCMTGate` (the ``MCMT`` class
was removed in Qiskit 2.4), :func:`~qiskit.circuit.library.grover_operator` (the ``GroverOperator``
class is deprecated), ``MCPhaseGate``, ``PhaseOracleGate`` and ``DiagonalGate``.

The circuit has the GroverGPT-2 structure: ``h`` on every search qubit, then k times one gate named
``Oracle`` and one named ``Diffuser`` (``grover_operator`` of an empty oracle, i.e. the reflection
about the uniform state 2|s><s| - I up to a global phase), then measurement of the search qubits.
The ``mcp_flag`` style adds one ancilla qubit (index n, prepared in |1>) that is never measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantum.problem import GroverProblem, GroverProblemError

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = [
    "MAX_CIRCUIT_QUBITS",
    "MAX_DIAGONAL_QUBITS",
    "MCX_MODES",
    "build_circuit",
    "build_oracle",
    "diffuser",
    "grover_operator_circuit",
    "random_library_circuit",
    "tamper_circuit",
]

MAX_CIRCUIT_QUBITS = 32  # beyond this no statevector fits in memory; use the analytic backend
MAX_DIAGONAL_QUBITS = 16  # DiagonalGate stores 2**n phases and synthesises O(2**n) gates
# How grover_operator_circuit builds each multi-controlled Z: MCMTGate, or h-mcx-h by mode.
MCX_MODES = ("mcmt", "noancilla", "recursion", "v-chain", "v-chain-dirty")


def _zero_qubits(bits: str) -> list[int]:
    """Qubits whose bit is 0 in ``bits`` (qubit i is character n-1-i)."""
    n = len(bits)
    return [i for i in range(n) if bits[n - 1 - i] == "0"]


def boolean_expression(problem: GroverProblem) -> str:
    """DNF over variables x0..x{n-1} (xi = qubit i) that is true exactly on the marked states."""
    clauses = []
    for s in problem.marked:
        n = len(s)
        lits = [("" if s[n - 1 - i] == "1" else "~") + f"x{i}" for i in range(n)]
        clauses.append("(" + " & ".join(lits) + ")")
    return " | ".join(clauses)


def build_oracle(problem: GroverProblem) -> QuantumCircuit:
    """The phase oracle as a circuit named ``Oracle`` (n qubits, n+1 for ``mcp_flag``).

    Every style applies |x> -> -|x> for marked x and leaves the other basis states alone (for
    ``mcp_flag`` with the flag qubit in |1>).
    """
    import numpy as np
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit.library import (
        DiagonalGate,
        MCMTGate,
        MCPhaseGate,
        PhaseOracleGate,
        ZGate,
    )

    n = problem.n_qubits
    style = problem.oracle_style
    if style == "mcp_flag":
        qc = QuantumCircuit(n + 1, name="Oracle")
        for s in problem.marked:
            zeros = _zero_qubits(s)
            if zeros:
                qc.x(zeros)
            qc.append(MCPhaseGate(np.pi, n), list(range(n + 1)))
            if zeros:
                qc.x(zeros)
        return qc
    qc = QuantumCircuit(n, name="Oracle")
    if style == "x_mcz_x":
        for s in problem.marked:
            zeros = _zero_qubits(s)
            if zeros:
                qc.x(zeros)
            if n == 1:
                qc.z(0)
            else:
                qc.append(MCMTGate(ZGate(), n - 1, 1), list(range(n)))
            if zeros:
                qc.x(zeros)
    elif style == "phase_oracle":
        qc.append(
            PhaseOracleGate(boolean_expression(problem), var_order=[f"x{i}" for i in range(n)]),
            list(range(n)),
        )
    elif style == "diagonal":
        if n > MAX_DIAGONAL_QUBITS:
            raise GroverProblemError(
                f"oracle_style 'diagonal' needs 2**n phases; n_qubits={n} > "
                f"{MAX_DIAGONAL_QUBITS}; use 'x_mcz_x' for larger n"
            )
        diag = np.ones(2**n)
        diag[list(problem.marked_indices)] = -1.0
        qc.append(DiagonalGate(diag.tolist()), list(range(n)))
        # DiagonalGate's own definition nests non-unitary instructions that the QASM3 exporter
        # rejects; its {rz, cx} synthesis (2**n - 1 rz, 2**n - 2 cx) exports and loads cleanly.
        qc = transpile(qc, basis_gates=["rz", "cx"], optimization_level=0)
        qc.name = "Oracle"
    return qc


def diffuser(n_qubits: int) -> QuantumCircuit:
    """The reflection about the uniform superposition, from ``grover_operator`` of an empty oracle."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import grover_operator

    d = grover_operator(QuantumCircuit(n_qubits))
    d.name = "Diffuser"
    return d


def build_circuit(problem: GroverProblem, measure: bool = True) -> QuantumCircuit:
    """The full Grover circuit: H on every search qubit, k x (Oracle, Diffuser), measure.

    Args:
        problem: the instance.
        measure: add a classical register ``c`` of n bits and measure the search qubits.

    Returns:
        A circuit with registers ``q`` (n qubits), ``flag`` (1 qubit, ``mcp_flag`` only) and ``c``.
    """
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

    n = problem.n_qubits
    if n > MAX_CIRCUIT_QUBITS:
        raise GroverProblemError(
            f"n_qubits={n} is too large for a circuit (> {MAX_CIRCUIT_QUBITS}); use "
            "simulate(problem, backend='analytic') or the two-level closed form"
        )
    q = QuantumRegister(n, "q")
    regs = [q]
    if problem.oracle_style == "mcp_flag":
        flag = QuantumRegister(1, "flag")
        regs.append(flag)
    qc = QuantumCircuit(*regs, name=f"grover_n{n}_t{problem.n_marked}_k{problem.iterations}")
    if measure:
        c = ClassicalRegister(n, "c")
        qc.add_register(c)
    oracle = build_oracle(problem).to_gate()
    diff = diffuser(n).to_gate()
    qc.h(q)
    oracle_qubits = list(range(qc.num_qubits))
    if problem.oracle_style == "mcp_flag":
        qc.x(qc.num_qubits - 1)
    for _ in range(problem.iterations):
        qc.append(oracle, oracle_qubits)
        qc.append(diff, list(range(n)))
    if measure:
        qc.measure(q, c)
    return qc


def _mcx_ancillas(mode: str, controls: int) -> int:
    if mode == "recursion":
        return 1 if controls > 4 else 0
    if mode in ("v-chain", "v-chain-dirty"):
        return max(0, controls - 2)
    return 0


def grover_operator_circuit(
    problem: GroverProblem, mcx_mode: str = "mcmt", as_gate: bool = False
) -> QuantumCircuit:
    """Grover search built with Qiskit's own ``grover_operator``, as other Grover datasets do.

    The oracle X-conjugates a multi-controlled Z per marked state: ``MCMTGate(ZGate(), n-1, 1)``
    (``mcx_mode="mcmt"``) or ``h``·``mcx``·``h`` on qubit n-1 with ``QuantumCircuit.mcx(mode=...)``
    (``"noancilla"``, ``"recursion"``, ``"v-chain"``, ``"v-chain-dirty"``; the ``mode`` argument is
    deprecated since Qiskit 2.1 but still what such exports contain), with the mode's ancillas
    after the n search qubits. ``grover_operator(oracle, reflection_qubits=search)`` gives the
    iteration; the circuit is H on the search qubits, k iterations (composed inline, or appended
    as one gate ``Q`` each with ``as_gate=True``), then measurement of the search qubits.
    """
    import warnings

    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.library import MCMTGate, ZGate, grover_operator

    if mcx_mode not in MCX_MODES:
        raise GroverProblemError(f"unknown mcx_mode {mcx_mode!r}; use one of {MCX_MODES}")
    n = problem.n_qubits
    if n < 2 or n > MAX_CIRCUIT_QUBITS:
        raise GroverProblemError(f"grover_operator_circuit needs 2 <= n_qubits <= 32, not {n}")
    ancillas = _mcx_ancillas(mcx_mode, n - 1)
    oracle = QuantumCircuit(n + ancillas)
    for s in problem.marked:
        zeros = _zero_qubits(s)
        if zeros:
            oracle.x(zeros)
        if mcx_mode == "mcmt":
            oracle.append(MCMTGate(ZGate(), n - 1, 1), list(range(n)))
        else:
            oracle.h(n - 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                oracle.mcx(
                    list(range(n - 1)), n - 1, list(range(n, n + ancillas)) or None, mode=mcx_mode
                )
            oracle.h(n - 1)
        if zeros:
            oracle.x(zeros)
    step = grover_operator(oracle, reflection_qubits=list(range(n)))
    q = QuantumRegister(n, "q")
    regs = [q] + ([QuantumRegister(ancillas, "anc")] if ancillas else [])
    qc = QuantumCircuit(*regs, ClassicalRegister(n, "c"))
    qc.h(q)
    for _ in range(problem.iterations):
        if as_gate:
            qc.append(step.to_gate(), list(range(qc.num_qubits)))
        else:
            qc.compose(step, inplace=True)
    qc.measure(q, qc.cregs[0])
    return qc


def random_library_circuit(seed: int, max_qubits: int = 7) -> QuantumCircuit:
    """A random circuit made of Qiskit library parts, for testing readers of Qiskit's QASM exports.

    One of: :func:`grover_operator_circuit` of a random problem, mode and form; a layer mix of
    ``mcx`` in every mode and size (so the exporter numbers its definitions), the MCX synthesis
    classes (gray code, recursive, v-chain), ``MCMTGate`` over random base gates, and
    ``grover_operator`` of a random phase oracle; or ``qiskit.circuit.random.random_circuit`` over
    the standard gates (measured or not). Deprecated Qiskit constructors are used on purpose:
    files in the wild contain what they export.
    """
    import warnings

    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit.circuit.random import random_circuit

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, max_qubits + 1))
    kind = int(rng.integers(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if kind == 0:
            size = int(rng.integers(1, min(4, 2**n)))
            states = rng.choice(2**n, size=size, replace=False)
            problem = GroverProblem(
                n, [format(int(i), f"0{n}b") for i in states], int(rng.integers(1, 4))
            )
            mode = MCX_MODES[int(rng.integers(len(MCX_MODES)))]
            return grover_operator_circuit(problem, mode, bool(rng.integers(2)))
        if kind == 1:
            return random_circuit(n, int(rng.integers(1, 8)), 3, bool(rng.integers(2)), seed=seed)
        qc = QuantumCircuit(2 * max_qubits + 2)
        for _ in range(int(rng.integers(1, 5))):
            _random_library_part(qc, rng, max_qubits)
        return qc


def _random_library_part(qc: QuantumCircuit, rng: Any, max_qubits: int) -> None:
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import (
        HGate,
        MCMTGate,
        MCXGrayCode,
        MCXRecursive,
        MCXVChain,
        PhaseGate,
        PhaseOracleGate,
        RZGate,
        XGate,
        YGate,
        ZGate,
        grover_operator,
    )

    c = int(rng.integers(1, max_qubits))
    part = int(rng.integers(5))
    if part == 0:
        mode = ("noancilla", "recursion", "v-chain", "v-chain-dirty")[int(rng.integers(4))]
        anc = _mcx_ancillas(mode, c)
        qc.mcx(list(range(c)), c, list(range(c + 1, c + 1 + anc)) or None, mode=mode)
    elif part == 1:
        gate = (
            MCXGrayCode(c),
            MCXRecursive(c),
            MCXVChain(c, dirty_ancillas=bool(rng.integers(2))),
        )[int(rng.integers(3))]
        qc.append(gate, list(range(gate.num_qubits)))
    elif part == 2:
        theta = float(rng.uniform(-3, 3))
        base = (ZGate(), XGate(), YGate(), HGate(), RZGate(theta), PhaseGate(theta))[
            int(rng.integers(6))
        ]
        targets = int(rng.integers(1, 3))
        qc.append(MCMTGate(base, c, targets), list(range(c + targets)))
    elif part == 3:
        names = [f"x{i}" for i in range(c + 1)]
        expr = " | ".join(
            " & ".join(("" if rng.integers(2) else "~") + v for v in names) for _ in range(2)
        )
        oracle = QuantumCircuit(c + 1)
        oracle.append(PhaseOracleGate(expr, var_order=names), range(c + 1))
        qc.compose(grover_operator(oracle, insert_barriers=bool(rng.integers(2))), inplace=True)
    else:
        qc.h(int(rng.integers(qc.num_qubits)))
        qc.cp(float(rng.uniform(-3, 3)), 0, int(rng.integers(1, qc.num_qubits)))


TAMPER_EDITS = ("remove", "duplicate", "swap", "insert")
TAMPER_GATES = ("x", "z", "h", "s", "t", "rz", "cx", "cz")


def tamper_circuit(
    circuit: QuantumCircuit, edit: str, where: int, gate: str = "x", qubit: int = 0
) -> QuantumCircuit:
    """``circuit`` with one change before its measurements, for testing circuit readers.

    ``edit``: ``"remove"``, ``"duplicate"`` or ``"swap"`` (with the next) the top-level
    instruction ``where`` (mod their count), or ``"insert"`` ``gate`` (one of
    :data:`TAMPER_GATES`; ``rz`` is rz(0.3), two-qubit gates act on ``qubit`` and the next) there.
    """
    from qiskit import QuantumCircuit

    if edit not in TAMPER_EDITS or gate not in TAMPER_GATES:
        raise GroverProblemError(
            f"edit {edit!r} / gate {gate!r}: use {TAMPER_EDITS} / {TAMPER_GATES}"
        )
    data = [i for i in circuit.data if i.operation.name != "measure"]
    tail = [i for i in circuit.data if i.operation.name == "measure"]
    where %= max(1, len(data))
    if edit == "remove" and data:
        data.pop(where)
    elif edit == "duplicate" and data:
        data.insert(where, data[where])
    elif edit == "swap" and where + 1 < len(data):
        data[where], data[where + 1] = data[where + 1], data[where]
    elif edit == "insert":
        n = circuit.num_qubits
        q = [qubit % n, (qubit + 1) % n]
        extra = QuantumCircuit(n)
        getattr(extra, gate)(*{"rz": (0.3, q[0]), "cx": q, "cz": q}.get(gate, (q[0],)))
        qubits = [circuit.qubits[extra.find_bit(b).index] for b in extra.data[0].qubits]
        data.insert(where, extra.data[0].replace(qubits=qubits))
    out = circuit.copy_empty_like()
    for inst in data + tail:
        out.append(inst)
    return out
