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

from typing import TYPE_CHECKING

from quantum.problem import GroverProblem, GroverProblemError

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = ["MAX_CIRCUIT_QUBITS", "MAX_DIAGONAL_QUBITS", "build_circuit", "build_oracle", "diffuser"]

MAX_CIRCUIT_QUBITS = 32  # beyond this no statevector fits in memory; use the analytic backend
MAX_DIAGONAL_QUBITS = 16  # DiagonalGate stores 2**n phases and synthesises O(2**n) gates


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
