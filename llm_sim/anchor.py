"""GroverGPT-2's record format: Alpaca JSON records with OpenQASM 3 input, both ways.

A record is ``{"instruction": "", "input": <QASM3>, "output": <chain of thought>}`` as written by
``dataset_generate_MMS.py`` in GroverGPT-plus (arXiv 2505.04880): ``input`` is the full circuit
(``qiskit.qasm3.dumps``, the GroverGPT-2 structure with ``gate mcmt`` / ``gate Oracle`` /
``gate Diffuser``) or only its ``gate Oracle`` block; ``output`` reads the oracle block by block
(which qubits are X-conjugated around the ``mcmt``), lists the marked states and ends with the
truncated probability dict (:func:`quantum.render` ``"answer_anchor"``).

- :func:`anchor_record` / :func:`export_anchor` write records for our X-MCZ-X problems with k >= 1
  (Qiskit exports no ``gate Oracle`` for a circuit that never applies it). For the optimal k
  (every anchor circuit) ``output`` is the text the anchor's generator writes for the same QASM;
  for another k the dict holds that k's probabilities (the anchor's generator assumes k*).
- :func:`import_anchor` reads such a file back into :class:`~quantum.GroverProblem` objects
  through :func:`quantum.qasm_import.import_grover`: each circuit is parsed and *proven* to be
  Grover search (its oracle blocks flip the phase of exactly the marked states, its diffusers are
  the reflection about the uniform state, k pairs), never matched as text, so a record whose
  oracle was emptied or changed, or whose calls were removed or added, is refused (or read as
  what it computes) instead of being scored against the wrong truth. k is the number of oracle /
  diffuser pairs of a full circuit, and k* for an oracle-only input (the anchor's convention);
  the oracle-only input has no ``gate mcmt`` definition, so the anchor's (``MCMTGate(ZGate(),
  n-1, 1)``, a multi-controlled Z on the Oracle's n qubits) is supplied. ``qhybrid llm eval --set
  anchor=FILE`` scores a model on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_text

__all__ = ["INPUTS", "anchor_reasoning", "anchor_record", "export_anchor", "import_anchor"]

INPUTS = ("full", "oracle")  # the anchor's FullCircuit and Oracle inputs
_ORACLE = re.compile(r"gate Oracle\s*((?:[\w]+,?\s*)+)\s*{([^}]*)}", re.DOTALL)


class AnchorFormatError(QHybridError):
    """An anchor record that cannot be read as a GroverGPT-2 Grover circuit."""


def _oracle_parts(qasm: str) -> tuple[list[str], list[str], str]:
    """(gate parameters in declared order, operations, raw body) of the ``gate Oracle`` block."""
    m = _ORACLE.search(qasm)
    if not m:
        raise AnchorFormatError("no 'gate Oracle <qubits> { ... }' block in the QASM input")
    params = [p.strip() for p in m.group(1).split(",") if p.strip()]
    ops = [op.strip() for op in m.group(2).split(";") if op.strip()]
    return params, ops, m.group(2)


def _blocks(params: Sequence[str], ops: Sequence[str]) -> list[tuple[list[str], str, list[str]]]:
    """Per marked state: (block operations, marked bitstring, state-construction lines).

    A block is the run of ``x`` before an ``mcmt`` and as many operations after it; qubit q is a
    0 of the marked state when ``x q`` occurs on both sides (bits prepended: qubit 0 rightmost).
    """
    mcmt = f"mcmt {', '.join(params)}"
    out, prev_end = [], 0
    for i in [j for j, op in enumerate(ops) if op.startswith("mcmt")]:
        if ops[i] != mcmt:
            raise AnchorFormatError(f"oracle operation {ops[i]!r} is not {mcmt!r}")
        start = i
        while start > prev_end and ops[start - 1].startswith("x "):
            start -= 1
        block = list(ops[start : 2 * i - start + 1])
        pre, post = block[: i - start], block[i - start + 1 :]
        state, steps = "", []
        for q in params:
            zero = f"x {q}" in pre and f"x {q}" in post
            state = ("0" if zero else "1") + state
            steps.append(
                f"x {q}: {'Present' if zero else 'Absent'} → {'0' if zero else '1'}, then → {state}"
            )
        out.append((block, state, steps))
        prev_end = 2 * i - start + 1
    if not out:
        raise AnchorFormatError("the Oracle block has no 'mcmt' operation: no marked state")
    return out


def anchor_reasoning(problem: Any) -> str:
    """The anchor's ``output`` text for ``problem`` (see the module docstring)."""
    from quantum import render

    params, ops, body = _oracle_parts(render(problem, "qasm3"))
    lines = ["=== Analysis ===", "", "The Oracle entity is extracted below:", body]
    blocks = _blocks(params, ops)
    for i, (block, state, steps) in enumerate(blocks, start=1):
        lines += [f"\n=== Block {i} ===", "Operation sequence:", *[f"{op};" for op in block]]
        lines += ["\nState construction:", *[f"{j}. {s}" for j, s in enumerate(steps, 1)]]
        lines.append(f"Final state: {state}")
    lines += ["\n=== Final Marked States ===", *[state for _, state, _ in blocks]]
    lines.append(
        "\n=== Simulation Results of the Grover's Algorithm ===\n"
        + render(problem, "answer_anchor")
    )
    return "\n".join(lines)


def anchor_record(problem: Any, input: str = "full") -> dict[str, str]:
    """One Alpaca record: the full circuit (``"full"``) or its Oracle block (``"oracle"``)."""
    from quantum import render

    if input not in INPUTS:
        raise AnchorFormatError(f"input={input!r} is not an anchor input; use one of {INPUTS}")
    if problem.oracle_style != "x_mcz_x" or problem.iterations == 0:
        raise AnchorFormatError(
            f"the anchor format reads the marked states off an X-MCZ-X 'gate Oracle' block; "
            f"{problem} has oracle_style={problem.oracle_style!r} and k={problem.iterations} (a "
            "k = 0 circuit exports no Oracle gate); export x_mcz_x problems with k >= 1"
        )
    qasm = render(problem, "qasm3")
    text = qasm if input == "full" else _ORACLE.search(qasm).group(0)  # type: ignore[union-attr]
    return {"instruction": "", "input": text, "output": anchor_reasoning(problem)}


def export_anchor(problems: Iterable[Any], path: str | Path, input: str = "full") -> int:
    """Write ``problems`` as a JSON list of anchor records (atomically); returns the count."""
    records = [anchor_record(p, input) for p in problems]
    atomic_write_text(Path(path), json.dumps(records, indent=4, ensure_ascii=False))
    return len(records)


_HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'


def _anchor_program(qasm: str) -> str:
    """The record's QASM, completed as the anchor's oracle-only input needs: its ``gate Oracle``
    block comes without the header and without the ``mcmt`` it calls (``MCMTGate(ZGate(), n-1,
    1)`` in the anchor's circuits: a multi-controlled Z on all n qubits)."""
    from quantum.qasm_import import gate_definitions

    if qasm.lstrip().startswith("OPENQASM"):
        return qasm
    gates = gate_definitions(_HEADER + qasm)
    n = gates.get("Oracle", 0)
    if "mcmt" in gates or n < 2:
        return _HEADER + qasm
    args = ", ".join(f"q{i}" for i in range(n))
    return f"{_HEADER}gate mcmt {args} {{\n  ctrl({n - 1}) @ z {args};\n}}\n{qasm}"


def _problem(record: Any, index: int) -> Any:
    from quantum.qasm_import import import_grover

    if not isinstance(record, dict) or not isinstance(record.get("input"), str):
        raise AnchorFormatError(f"record {index} has no string 'input' (the QASM circuit)")
    try:
        return import_grover(_anchor_program(record["input"])).problem
    except QHybridError as err:
        raise AnchorFormatError(f"record {index}: {err}") from None


def import_anchor(path: str | Path) -> list[Any]:
    """The problems of an anchor JSON file (a list of records), in file order.

    Raises:
        AnchorFormatError: the file is missing, not JSON, not a list, or a record is not a
            Grover circuit in the anchor's layout (the message names the record).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnchorFormatError(f"anchor file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnchorFormatError(
            f"anchor file {str(path)!r} is not a JSON list of records: {err}"
        ) from None
    if not isinstance(data, list) or not data:
        raise AnchorFormatError(
            f"anchor file {str(path)!r} must hold a non-empty JSON list of "
            '{"instruction", "input", "output"} records'
        )
    return [_problem(r, i) for i, r in enumerate(data)]
