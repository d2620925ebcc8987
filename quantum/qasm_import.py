"""Read OpenQASM 3 circuits and recognise Grover search in them by what they compute, not their text.

The text is bounded (bytes, statements, tokens, bracket depth) and checked (UTF-8, no binary)
before the real parser sees it, the openqasm3 reference parser; its syntax tree is checked (no
include but ``stdgates.inc``, no classical control flow, literal register sizes, qubits and gate
applications bounded) before Qiskit's converter (``qiskit-qasm3-import``, what
``qiskit.qasm3.loads`` runs) builds the circuit, custom gate definitions included.

:func:`import_grover` then returns a :class:`GroverImport` only when the circuit provably is a
Grover search, else raises :class:`QasmImportError` naming what is not Grover. Every gate
definition is unrolled to standard gates (no gate is trusted by its name; a top-level custom gate
with no ``h`` on a search qubit is unrolled once and judged once however often it is called), and
the circuit is cut at its Hadamard layers (``h`` on every search qubit, consecutively; where an
``h`` of a neighbouring block touches a layer, the cut that leaves a diagonal block). Search qubits
are the measured ones in clbit order (else those whose first gate is ``h``). A Grover circuit reads

    prefix (ancillas only) · L · O · L · R · L · O · L · R · L ... · measure,    L = H^{⊗n},

where each O and each R is *diagonal* on the n search qubits (for every basis state x of the search
register, with the ancillas in the basis state they hold there, the block returns e^{iφ(x)}|x>
and the ancillas in one common basis state). Then every O must be the same phase oracle
O_S = c·(I − 2 Σ_{s∈S} |s><s|) and every R the reflection about |0...0> (so L·R·L = ±(2|s><s| − I),
the diffuser), and the circuit computes (D·O_S)^k H^{⊗n}|0>: Grover search for the marked set S
with k iterations, whose exact distribution is the two-level closed form
(:func:`quantum.simulate.two_level`). How a block's action is established (``GroverImport.verified``):

- ``"symbolic"``: blocks of ``x`` and multi-controlled Z / phase(π) gates on all search qubits (also
  ``h``·controlled-X·``h``), any n <= 60: each such gate flips the phase of one basis state;
- ``"exact"``: n <= ``max_exact_qubits``: the block is applied to all 2^n basis states at once,
  each kept as a sparse superposition (exact for any gates, while the superpositions stay small);
- ``"probe"``: otherwise, while the block's qubits fit ``max_probe_qubits``: Aer applies it to two
  random states r with random moduli; a block is accepted only if |(U r)_x| = |r_x| for every x,
  which a non-diagonal block passes with probability 0 (and below ~1e-9 per state under the 1e-9
  tolerance), and φ(x) = arg((U r)_x / r_x).

Where the whole circuit fits ``max_simulate_qubits`` and a work budget, Aer also simulates it and its
distribution must equal the closed form to 1e-9 (``GroverImport.aer_max_abs_diff``).

Which set is "marked": a phase oracle O_S equals −O_{S^c}, the same operation up to a global phase
(and global phases are dropped: where a definition's phase would sit among the blocks is
arbitrary), and Grover gives S and its complement the same distribution. The importer takes the
smaller class, so every problem with t < 2^n / 2 (every dataset and anchor problem) reads back as
written; one with t > 2^n / 2 reads back as its complement (the same distribution); exactly half
is refused as ambiguous (Grover then gives the uniform distribution for any k).

A circuit that is not Grover can still be simulated exactly: :func:`circuit_distribution`.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from annotated_types import Ge, Le

from qhybrid.config import check_fields
from qhybrid.errors import QHybridError
from quantum.problem import GroverProblem, GroverProblemError

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = [
    "GroverImport",
    "QasmImportError",
    "QasmLimits",
    "circuit_distribution",
    "gate_definitions",
    "import_grover",
    "import_grover_file",
    "parse_qasm",
    "read_qasm",
]

ALLOWED_INCLUDES = ("stdgates.inc",)
_TOKEN = re.compile(r"\w+|\S")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_OPEN, _CLOSE = np.frombuffer(b"([{", np.uint8), np.frombuffer(b")]}", np.uint8)
_TOL = 1e-9  # phases, moduli and probabilities are compared to this
Leaf = tuple[Any, tuple[int, ...]]  # a standard gate and its qubits
Item = tuple[int, Any, tuple[int, ...]]  # (top-level index, standard gate or _Unit, qubits)


class QasmImportError(QHybridError):
    """OpenQASM text that cannot be read, or a circuit that is not the Grover search it is taken for."""


@dataclass(frozen=True)
class QasmLimits:
    """Bounds on a QASM input, checked before the expensive step they protect."""

    max_bytes: Annotated[int, Ge(1)] = 4 << 20  # file or text size, checked before reading it all
    max_statements: Annotated[int, Ge(1)] = 100_000  # ';' in the text, before parsing (~4k/s)
    max_tokens: Annotated[int, Ge(1)] = 500_000  # words and symbols, before parsing (~25k/s)
    max_nesting: Annotated[int, Ge(1)] = 100  # depth of (), [] and {} before parsing
    max_qubits: Annotated[int, Ge(1), Le(62)] = 62  # declared qubits (basis states are int64)
    max_operations: Annotated[int, Ge(1)] = 500_000  # gates after unrolling loops and definitions
    max_exact_qubits: Annotated[int, Ge(1), Le(26)] = 20  # search qubits checked on all 2^n states
    max_exact_terms: Annotated[int, Ge(1)] = 4_000_000  # ... <= 16 per state and this many in all
    max_probe_qubits: Annotated[int, Ge(1), Le(32)] = 24  # qubits of a block Aer probes
    max_simulate_qubits: Annotated[int, Ge(0), Le(32)] = 20  # whole-circuit Aer check up to here
    max_simulate_work: Annotated[float, Ge(0)] = 2e9  # ... and gates x 2^qubits up to this

    def __post_init__(self) -> None:
        check_fields(self)


# --------------------------------------------------------------------------------------------
# Reading and parsing, bounded


def read_qasm(path: str | os.PathLike[str], limits: QasmLimits | None = None) -> str:
    """The text of a QASM file: a regular file of at most ``max_bytes`` UTF-8 bytes, no binary.

    The file is opened without blocking and checked with ``fstat`` before anything is read, so a
    FIFO, a device such as ``/dev/zero`` or a directory is refused at once; at most
    ``max_bytes + 1`` bytes are ever read (a sparse 1 GB file costs nothing).
    """
    limits = limits or QasmLimits()
    name = str(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise QasmImportError(f"QASM file {name!r} does not exist") from None
    except OSError as err:
        raise QasmImportError(f"cannot open QASM file {name!r}: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
            raise QasmImportError(
                f"{name!r} is {kind} (a device, pipe, socket or directory); give a .qasm text file"
            )
        if info.st_size > limits.max_bytes:
            raise QasmImportError(
                f"QASM file {name!r} has {info.st_size:,} bytes, over the limit of "
                f"{limits.max_bytes:,} (QasmLimits.max_bytes); give a smaller circuit"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limits.max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:
        raise QasmImportError(
            f"QASM file {name!r} is longer than {limits.max_bytes:,} bytes (QasmLimits.max_bytes)"
        )
    return _decode(data, name)


def _decode(data: bytes, name: str) -> str:
    if b"\x00" in data:
        raise QasmImportError(f"{name!r} holds NUL bytes: it is binary, not OpenQASM text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise QasmImportError(
            f"{name!r} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r}); "
            "OpenQASM files are UTF-8"
        ) from None


def _check_text(text: Any, limits: QasmLimits) -> str:
    if isinstance(text, bytes):
        text = _decode(text, "the QASM input")
    if not isinstance(text, str):
        raise QasmImportError(f"QASM input must be a str, not {type(text).__name__}")
    if len(text) > limits.max_bytes:
        raise QasmImportError(
            f"QASM text has {len(text):,} characters, over QasmLimits.max_bytes={limits.max_bytes:,}"
        )
    bad = _CONTROL.search(text)
    if bad is not None:
        raise QasmImportError(
            f"QASM text holds the control character {bad.group()!r}: it is binary, not OpenQASM text"
        )
    statements = text.count(";")
    if statements > limits.max_statements:
        raise QasmImportError(
            f"QASM text has {statements:,} statements (';'), over QasmLimits.max_statements="
            f"{limits.max_statements:,}; use a for loop or raise the limit"
        )
    tokens = len(_TOKEN.findall(text))
    if tokens > limits.max_tokens:
        raise QasmImportError(
            f"QASM text has {tokens:,} words and symbols, over QasmLimits.max_tokens="
            f"{limits.max_tokens:,} (the parser reads ~25k a second)"
        )
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    depth = np.cumsum(np.isin(data, _OPEN).astype(np.int64) - np.isin(data, _CLOSE))
    if depth.size and depth.max() > limits.max_nesting:
        raise QasmImportError(
            f"QASM text nests brackets {int(depth.max())} deep, over QasmLimits.max_nesting="
            f"{limits.max_nesting}"
        )
    if not text.strip():
        raise QasmImportError("the QASM input is empty")
    return text


def parse_qasm(text: str | bytes, limits: QasmLimits | None = None) -> QuantumCircuit:
    """Parse OpenQASM 3 ``text`` into a Qiskit circuit, bounded and checked first (see module doc).

    Raises:
        QasmImportError: the text is too large, binary, malformed, includes anything but
            ``stdgates.inc``, uses classical control flow, or declares too many qubits.
    """
    limits = limits or QasmLimits()
    program = _parse_ast(_check_text(text, limits), limits)
    return _convert(program)


def _parse_ast(text: str, limits: QasmLimits) -> Any:
    import openqasm3

    try:
        program = openqasm3.parse(text)
    except RecursionError:
        raise QasmImportError("QASM text is nested too deeply to parse") from None
    except Exception as err:  # the ANTLR parser raises its own error types
        raise QasmImportError(f"malformed OpenQASM 3: {_first_line(err)}") from None
    _check_program(program, limits)
    return program


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _convert(program: Any) -> QuantumCircuit:
    import warnings

    import qiskit_qasm3_import

    try:
        with warnings.catch_warnings():  # the converter calls Gate.control(annotated=None)
            warnings.filterwarnings(
                "ignore", "``qiskit.circuit.gate.Gate.control", DeprecationWarning
            )
            return qiskit_qasm3_import.convert(program)
    except RecursionError:
        raise QasmImportError("QASM gate definitions are nested too deeply") from None
    except Exception as err:  # ConversionError and the converter's own checks
        raise QasmImportError(f"OpenQASM 3 that Qiskit cannot build: {_first_line(err)}") from None


_CONTROL_FLOW = {
    "BranchingStatement": "an 'if' statement",
    "WhileLoop": "a 'while' loop",
    "SwitchStatement": "a 'switch' statement",
    "BreakStatement": "'break'",
    "ContinueStatement": "'continue'",
    "EndStatement": "'end'",
    "ClassicalAssignment": "a classical assignment",
    "ExpressionStatement": "a classical expression",
    "SubroutineDefinition": "a subroutine ('def')",
    "ReturnStatement": "'return'",
    "ExternDeclaration": "an 'extern' function",
    "QuantumReset": "'reset'",
    "IODeclaration": "an 'input'/'output' declaration (unbound parameters)",
    "CalibrationDefinition": "a 'defcal' calibration",
    "CalibrationStatement": "a 'cal' block",
}


def _line(node: Any) -> str:
    span = getattr(node, "span", None)
    return f"line {span.start_line}" if span is not None else "a statement"


def _literal_int(node: Any, what: str) -> int:
    from openqasm3 import ast

    if node is None:
        return 1
    if isinstance(node, ast.IntegerLiteral):
        return int(node.value)
    negative = isinstance(node, ast.UnaryExpression) and node.op.name == "-"
    if negative and isinstance(node.expression, ast.IntegerLiteral):
        return -int(node.expression.value)
    raise QasmImportError(
        f"{_line(node)}: {what} must be an integer literal (a computed size or range cannot be "
        "bounded before it is built)"
    )


def _loop_count(loop: Any) -> int:
    from openqasm3 import ast

    rng = loop.set_declaration
    if isinstance(rng, ast.DiscreteSet):
        return len(rng.values)
    if not isinstance(rng, ast.RangeDefinition):
        raise QasmImportError(f"{_line(loop)}: a for loop must run over [a:b] or {{...}}")
    start = _literal_int(rng.start, "a loop bound") if rng.start is not None else 0
    end = _literal_int(rng.end, "a loop bound")
    step = _literal_int(rng.step, "a loop step") if rng.step is not None else 1
    if step == 0:
        raise QasmImportError(f"{_line(loop)}: a for loop with step 0 never ends")
    return max(0, (end - start) // step + 1)


def _check_program(program: Any, limits: QasmLimits) -> None:
    """Refuse, from the syntax tree, what cannot be bounded or represented (see module doc)."""
    from openqasm3 import ast

    qubits = 0
    work = 0

    def visit(statements: Sequence[Any], repeat: int) -> None:
        nonlocal qubits, work
        for s in statements:
            kind = type(s).__name__
            if kind in _CONTROL_FLOW:
                raise QasmImportError(
                    f"{_line(s)}: {_CONTROL_FLOW[kind]} is classical control flow that a Grover "
                    "circuit does not use and this importer cannot represent; remove it"
                )
            if isinstance(s, ast.Include) and s.filename not in ALLOWED_INCLUDES:
                raise QasmImportError(
                    f"{_line(s)}: include {s.filename!r} is not available; only "
                    f"{', '.join(map(repr, ALLOWED_INCLUDES))} may be included (define the gates "
                    "in the file instead)"
                )
            if isinstance(s, ast.QubitDeclaration):
                size = _literal_int(s.size, "a qubit register size")
                if size < 1:
                    raise QasmImportError(f"{_line(s)}: qubit register of size {size}")
                qubits += size
                if qubits > limits.max_qubits:
                    raise QasmImportError(
                        f"{_line(s)}: {qubits} qubits declared, over QasmLimits.max_qubits="
                        f"{limits.max_qubits}"
                    )
            elif isinstance(s, ast.ClassicalDeclaration) and isinstance(s.type, ast.BitType):
                size = _literal_int(s.type.size, "a bit register size")
                if not 1 <= size <= 4 * limits.max_qubits:
                    raise QasmImportError(f"{_line(s)}: bit register of size {size}")
            elif isinstance(s, ast.ForInLoop):
                visit(s.block, repeat * _loop_count(s))
            elif isinstance(
                s, ast.QuantumGate | ast.QuantumPhase | ast.QuantumMeasurementStatement
            ):
                work += repeat
                if work > limits.max_operations:
                    raise QasmImportError(
                        f"the circuit applies more than {limits.max_operations:,} operations "
                        "(loops unrolled), over QasmLimits.max_operations"
                    )

    visit(program.statements, 1)


# --------------------------------------------------------------------------------------------
# Unrolling: top-level operations (loops unrolled), then standard-gate leaves


@dataclass
class _Circuit:
    """A parsed circuit, unrolled: gates in time order and where each qubit is measured."""

    num_qubits: int
    ops: list[Item]  # (top-level instruction index, gate, qubits)
    measured: dict[int, int]  # qubit -> clbit
    num_clbits: int
    from_text: bool = True  # custom gate names are unique (QASM forbids redefinition)


def _unroll(qc: QuantumCircuit, limits: QasmLimits, from_text: bool = True) -> _Circuit:
    """Loops unrolled (loop variable bound per pass); barriers and delays dropped; anything that is
    neither a gate nor a final measurement refused."""
    from qiskit.circuit import ForLoopOp, Gate

    out = _Circuit(qc.num_qubits, [], {}, qc.num_clbits, from_text)

    def walk(circuit: QuantumCircuit, qmap: Sequence[int], cmap: Sequence[int], top: int) -> None:
        for index, ins in enumerate(circuit.data):
            at = index if top < 0 else top
            op = ins.operation
            qubits = tuple(qmap[circuit.find_bit(q).index] for q in ins.qubits)
            clbits = tuple(cmap[circuit.find_bit(c).index] for c in ins.clbits)
            if op.name in ("barrier", "delay"):
                continue
            if op.name == "measure":
                _measure(out, qubits[0], clbits[0], at)
            elif isinstance(op, ForLoopOp):
                indexset, param, body = op.params
                for i in indexset:
                    bound = body.assign_parameters({param: i}) if param in body.parameters else body
                    walk(bound, qubits, clbits, at)
            elif isinstance(op, Gate):
                if any(q in out.measured for q in qubits):
                    raise QasmImportError(
                        f"instruction {at} ({op.name!r}) acts on a qubit after it was measured; "
                        "mid-circuit measurement is not part of a Grover circuit"
                    )
                if op.is_parameterized():
                    raise QasmImportError(f"instruction {at} ({op.name!r}) has unbound parameters")
                out.ops.append((at, op, qubits))
                if len(out.ops) > limits.max_operations:
                    raise QasmImportError(
                        f"more than {limits.max_operations:,} gates after unrolling loops "
                        "(QasmLimits.max_operations)"
                    )
            else:
                raise QasmImportError(
                    f"instruction {at} ({op.name!r}) is not a unitary gate or a final measurement "
                    "(reset and classical control flow cannot be represented)"
                )

    walk(qc, range(qc.num_qubits), range(qc.num_clbits), -1)
    return out


def _measure(out: _Circuit, qubit: int, clbit: int, at: int) -> None:
    if qubit in out.measured or clbit in out.measured.values():
        raise QasmImportError(
            f"instruction {at} measures qubit {qubit} into clbit {clbit}, but one of them was "
            "measured before; measure each search qubit once, into its own bit"
        )
    out.measured[qubit] = clbit


_MAX_LEAF_QUBITS = 6  # a standard gate up to this size is applied by its matrix


def _is_leaf(op: Any) -> bool:
    from qiskit.circuit import ControlledGate

    if isinstance(op, ControlledGate):
        return _is_leaf(op.base_gate)
    return hasattr(op, "__array__") and op.num_qubits <= _MAX_LEAF_QUBITS


def _leaves(
    op: Any, qubits: tuple[int, ...], depth: int = 0
) -> Iterator[tuple[Any, tuple[int, ...]]]:
    """Standard gates (controlled or not) that ``op`` applies, definitions unrolled."""
    if op.name in ("barrier", "delay"):
        return
    if _is_leaf(op):
        yield op, qubits
        return
    definition = getattr(op, "definition", None)
    if definition is None or depth > 64:
        raise QasmImportError(
            f"gate {op.name!r} has no definition in standard gates (or is nested over 64 deep)"
        )
    # A definition's global phase is dropped: it is global to the whole circuit, and where it
    # would sit among the blocks is arbitrary (a diffuser's phase pi could land on an oracle).
    for ins in definition.data:
        sub = tuple(qubits[definition.find_bit(q).index] for q in ins.qubits)
        yield from _leaves(ins.operation, sub, depth + 1)


@dataclass(eq=False)
class _Unit:
    """A top-level custom gate with no ``h`` on a search qubit, kept whole: no Hadamard layer can
    be inside it, and repeated calls share its leaves (unrolled once) and its verdicts."""

    leaves: tuple[Leaf, ...]
    key: Any
    name: str = "unit"
    gate: Any = None  # the leaves as one Qiskit gate, for Aer (built on first use)


def _unit_key(op: Any, from_text: bool) -> Any:
    """What identifies a custom gate: its name where the text made names unique, else the object."""
    if from_text:
        params = tuple(float(p) for p in op.params)
        return (op.name, params, op.num_qubits, getattr(op, "ctrl_state", None))
    return ("object", id(op))


def _items(circ: _Circuit, limits: QasmLimits, search: Sequence[int] = ()) -> list[Item]:
    """The circuit as standard gates, except custom gates that cannot hold a Hadamard layer (no
    ``h`` on a search qubit), which stay whole (:class:`_Unit`); bounded by ``max_operations``
    gates to look at (a unit's gates count once)."""
    from qiskit.circuit.library import HGate

    cache: dict[Any, tuple[_Unit | None, tuple[Leaf, ...], Any]] = {}
    out: list[Item] = []
    seen = 0
    want = set(search)
    for at, op, qubits in circ.ops:
        if _is_leaf(op):
            out.append((at, op, qubits))
            seen += 1
        else:
            key = (_unit_key(op, circ.from_text), qubits)
            if key not in cache:
                leaves = tuple(_leaves(op, qubits))
                split = any(isinstance(g, HGate) and q[0] in want for g, q in leaves)
                cache[key] = (None if split else _Unit(leaves, key), leaves, op)
                seen += len(leaves)
            unit, leaves, _ = cache[key]
            if unit is None:
                out.extend((at, g, q) for g, q in leaves)
                seen += len(leaves)
            else:
                out.append((at, unit, tuple(sorted({x for _, q in leaves for x in q}))))
        if seen > limits.max_operations:
            raise QasmImportError(
                f"more than {limits.max_operations:,} standard gates once loops and gate "
                "definitions are unrolled (QasmLimits.max_operations)"
            )
    return out


def _expand(part: Sequence[Any]) -> list[Leaf]:
    """Standard-gate leaves of (gate, qubits) pairs or (index, gate, qubits) items."""
    out: list[Leaf] = []
    for entry in part:
        op, qubits = entry[-2], entry[-1]
        if isinstance(op, _Unit):
            out.extend(op.leaves)
        else:
            out.append((op, qubits))
    return out


# --------------------------------------------------------------------------------------------
# What a block does to the basis states of the search register (three engines, see module doc)


class _NotDiagonal(Exception):
    """A block that provably is not diagonal on the search register (the message says why)."""


@dataclass(frozen=True)
class _Diagonal:
    """A block that maps |x>|a> to e^{iφ(x)} |x>|a_out> for every search basis state x."""

    phases: np.ndarray | None  # e^{iφ(x)}, index x (bit i = search qubit i), or None (symbolic)
    flipped: frozenset[int]  # symbolic form: phases are -c on these states, c elsewhere
    anc_out: int  # ancilla bits after the block (full-register bit positions)
    how: str  # "symbolic", "exact" or "probe"


def _sig(op: Any) -> tuple[Any, ...]:
    """A hashable identity of a standard gate: blocks with equal signatures act equally."""
    if isinstance(op, _Unit):
        return ("unit", op.key)
    base = getattr(op, "base_gate", None)
    ctrl = (getattr(op, "num_ctrl_qubits", 0), getattr(op, "ctrl_state", None))
    params = tuple(float(p) for p in op.params)
    return (op.name, params, ctrl, None if base is None else _sig(base))


def _deposit(x: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """Scatter bit i of each x to bit ``positions[i]`` (search index -> full-register basis)."""
    out = np.zeros_like(x)
    for i, pos in enumerate(positions):
        out |= ((x >> i) & 1) << pos
    return out


def _gather(basis: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    out = np.zeros_like(basis)
    for i, pos in enumerate(positions):
        out |= ((basis >> pos) & 1) << i
    return out


@dataclass
class _Terms:
    """Sparse states, one per input: term j is amp[j] |basis[j]> of input src[j]."""

    src: np.ndarray
    basis: np.ndarray
    amp: np.ndarray

    def take(self, mask: np.ndarray) -> _Terms:
        return _Terms(self.src[mask], self.basis[mask], self.amp[mask])

    @staticmethod
    def join(a: _Terms, b: _Terms) -> _Terms:
        return _Terms(*(np.concatenate(p) for p in zip(a.astuple(), b.astuple(), strict=True)))

    def astuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.src, self.basis, self.amp

    def merge(self, bits: int) -> _Terms:
        """Add up equal (input, basis) terms and drop those that cancelled."""
        key = (self.src << bits) | self.basis
        order = np.argsort(key, kind="stable")
        key, amp = key[order], self.amp[order]
        start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        amp, key = np.add.reduceat(amp, start), key[start]
        keep = np.abs(amp) > 1e-12
        key, amp = key[keep], amp[keep]
        return _Terms(key >> bits, key & ((1 << bits) - 1), amp)


_COLUMNS: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}


def _columns(op: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values) of each column's nonzero entries of a small gate's matrix, zero-padded."""
    key = _sig(op)
    if key not in _COLUMNS:
        m = np.asarray(op.to_matrix(), dtype=complex)
        nz = [np.flatnonzero(np.abs(m[:, c]) > 1e-15) for c in range(m.shape[1])]
        width = max(len(r) for r in nz)
        rows = np.zeros((m.shape[1], width), dtype=np.int64)
        vals = np.zeros((m.shape[1], width), dtype=complex)
        for c, r in enumerate(nz):
            rows[c, : len(r)], vals[c, : len(r)] = r, m[r, c]
        _COLUMNS[key] = (rows, vals)
    return _COLUMNS[key]


def _apply(terms: _Terms, op: Any, qubits: tuple[int, ...]) -> _Terms:
    """Apply one standard gate to every term (a controlled gate only where its controls match)."""
    from qiskit.circuit import ControlledGate

    if isinstance(op, ControlledGate) and op.num_ctrl_qubits:
        match = np.ones(len(terms.basis), dtype=bool)
        for j in range(op.num_ctrl_qubits):
            match &= ((terms.basis >> qubits[j]) & 1) == ((op.ctrl_state >> j) & 1)
        if not match.any():
            return terms
        hit = _apply(terms.take(match), op.base_gate, qubits[op.num_ctrl_qubits :])
        return _Terms.join(terms.take(~match), hit)
    rows, vals = _columns(op)
    local = _gather(terms.basis, qubits)
    clear = sum(1 << q for q in qubits)
    new_rows, new_vals = rows[local], vals[local] * terms.amp[:, None]
    basis = np.repeat((terms.basis & ~clear)[:, None], rows.shape[1], axis=1)
    for j, q in enumerate(qubits):
        basis |= ((new_rows >> j) & 1) << q
    if rows.shape[1] == 1:  # a permutation with phases: one term in, one out
        return _Terms(terms.src, basis[:, 0], new_vals[:, 0])
    keep = new_vals != 0
    src = np.repeat(terms.src[:, None], rows.shape[1], axis=1)
    return _Terms(src[keep], basis[keep], new_vals[keep])


def _run_exact(
    leaves: Sequence[Leaf], inputs: np.ndarray, bits: int, max_terms: int
) -> _Terms | None:
    """Apply ``leaves`` to every basis state in ``inputs`` exactly; None past ``max_terms``."""
    ones = np.ones(len(inputs), dtype=complex)
    terms = _Terms(np.arange(len(inputs), dtype=np.int64), inputs.astype(np.int64), ones)
    merged = len(inputs)
    for op, qubits in leaves:
        terms = _apply(terms, op, qubits)
        if len(terms.basis) > 2 * merged:
            terms = terms.merge(bits)
            merged = max(len(terms.basis), len(inputs))
            if len(terms.basis) > max_terms:
                return None
    return terms.merge(bits)


def _bits(x: int, n: int) -> str:
    return format(int(x), f"0{n}b")


def _exact_block(
    leaves: Sequence[Leaf],
    search: Sequence[int],
    anc: int,
    width: int,
    limits: QasmLimits,
) -> _Diagonal | None:
    """Every search basis state through the block, exactly (None if too many terms or qubits)."""
    n = len(search)
    if n > limits.max_exact_qubits:
        return None
    x = np.arange(2**n, dtype=np.int64)
    cap = min(16 * 2**n, limits.max_exact_terms)
    terms = _run_exact(leaves, _deposit(x, search) | anc, width, cap)
    if terms is None:
        return None
    counts = np.bincount(terms.src, minlength=2**n)
    if (counts != 1).any():
        bad = int(np.flatnonzero(counts != 1)[0])
        raise _NotDiagonal(
            f"turns |{_bits(bad, n)}> into a superposition of {counts[bad]} basis states"
        )
    order = np.argsort(terms.src)
    basis, amp = terms.basis[order], terms.amp[order]
    moved = np.flatnonzero(_gather(basis, search) != x)
    if moved.size:
        y = int(_gather(basis[moved[:1]], search)[0])
        raise _NotDiagonal(f"maps |{_bits(moved[0], n)}> to |{_bits(y, n)}> (not diagonal)")
    search_mask = sum(1 << q for q in search)
    anc_out = basis & ~search_mask
    if (anc_out != anc_out[0]).any():
        raise _NotDiagonal("leaves its ancilla qubits entangled with the search qubits")
    return _Diagonal(amp, frozenset(), int(anc_out[0]), "exact")


def _probe_block(
    leaves: Sequence[Leaf],
    search: Sequence[int],
    anc: int,
    limits: QasmLimits,
) -> _Diagonal | None:
    """Aer on two random states r (random moduli and phases): diagonal iff |(Ur)_x| = |r_x|."""
    touched = sorted(set(search) | {q for _, qs in leaves for q in qs})
    if len(touched) > limits.max_probe_qubits:
        return None
    local = {q: i for i, q in enumerate(touched)}
    n, width = len(search), len(touched)
    x = np.arange(2**n, dtype=np.int64)
    at = _deposit(x, [local[q] for q in search])
    anc_local = sum(1 << local[q] for q in touched if q not in search and (anc >> q) & 1)
    search_local = sum(1 << local[q] for q in search)
    circuit = _leaf_circuit(leaves, width, local)
    rng = np.random.default_rng()
    phases = []
    for _ in range(2):
        r = rng.uniform(0.5, 1.5, 2**n) * np.exp(2j * np.pi * rng.uniform(size=2**n))
        r /= np.linalg.norm(r)
        state = np.zeros(2**width, dtype=complex)
        state[at | anc_local] = r
        w = _aer_statevector(circuit, state)
        out_anc = int(np.argmax(np.abs(w))) & ~search_local
        w_x = w[at | out_anc]
        if abs(np.vdot(w_x, w_x).real - 1.0) > _TOL:
            raise _NotDiagonal("leaves its ancilla qubits entangled with the search qubits")
        ratio = np.abs(w_x) / np.abs(r)
        if np.max(np.abs(ratio - 1.0)) > _TOL:
            bad = int(np.argmax(np.abs(ratio - 1.0)))
            raise _NotDiagonal(f"changes the weight of |{_bits(bad, n)}> (not diagonal)")
        phases.append(w_x / r)
    if np.max(np.abs(phases[0] - phases[1])) > _TOL:
        raise _NotDiagonal("gives different phases on two random inputs (not diagonal)")
    anc_out = (anc & ~sum(1 << q for q in touched)) | sum(
        1 << q for q in touched if q not in search and (out_anc >> local[q]) & 1
    )
    return _Diagonal(phases[0], frozenset(), anc_out, "probe")


def _leaf_circuit(part: Sequence[Leaf], width: int, local: dict[int, int]) -> Any:
    """Standard gates (a unit as one gate of its leaves, named so no simulator knows it) for Aer."""
    from qiskit import QuantumCircuit

    from quantum.simulate import aer_transpile

    qc = QuantumCircuit(width)
    for op, qubits in part:
        if isinstance(op, _Unit):
            if op.gate is None:
                inner = {q: i for i, q in enumerate(qubits)}
                sub = QuantumCircuit(len(qubits), name="qhybrid_unrolled_gate")
                for g, q in op.leaves:
                    sub.append(g, [inner[x] for x in q])
                op.gate = sub.to_gate()
            qc.append(op.gate, [local[q] for q in qubits])
        else:
            qc.append(op, [local[q] for q in qubits])
    return aer_transpile(qc)


def _aer_statevector(circuit: Any, state: np.ndarray) -> np.ndarray:
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    qc = QuantumCircuit(circuit.num_qubits)
    qc.set_statevector(state)  # type: ignore[attr-defined]  # added by qiskit_aer
    qc.compose(circuit, inplace=True)
    qc.save_statevector()  # type: ignore[attr-defined]
    result = AerSimulator(method="statevector").run(qc).result()
    return np.asarray(result.get_statevector(), dtype=complex)


def _z_flip(op: Any, qubits: tuple[int, ...]) -> tuple[tuple[int, ...], int] | None:
    """(qubits, pattern) when ``op`` flips the sign of exactly the basis states matching
    ``pattern`` on ``qubits`` (a Z or phase(π), any controls); else None."""
    from qiskit.circuit import ControlledGate
    from qiskit.circuit.library import PhaseGate, U1Gate, ZGate

    ctrls, state, base = 0, 0, op
    if isinstance(op, ControlledGate) and op.num_ctrl_qubits:
        ctrls, state, base = op.num_ctrl_qubits, op.ctrl_state, op.base_gate
    pi_phase = (
        isinstance(base, PhaseGate | U1Gate)
        and abs(math.remainder(float(base.params[0]) - math.pi, 2 * math.pi)) < 1e-12
    )
    if isinstance(base, ZGate) or pi_phase:
        return qubits, state | (1 << ctrls)
    return None


def _hxh_flip(window: Sequence[Leaf]) -> tuple[tuple[int, ...], int] | None:
    """h t; (multi-)controlled X onto t; h t  ==  the controlled Z it is."""
    from qiskit.circuit import ControlledGate
    from qiskit.circuit.library import HGate, XGate

    (h1, q1), (cx, qx), (h2, q2) = window
    hxh = isinstance(h1, HGate) and isinstance(h2, HGate) and isinstance(cx, ControlledGate)
    if not hxh or q1 != q2 or not isinstance(cx.base_gate, XGate) or qx[-1] != q1[0]:
        return None
    return qx, cx.ctrl_state | (1 << cx.num_ctrl_qubits)


def _symbolic_block(leaves: Sequence[Leaf], search: Sequence[int], anc: int) -> _Diagonal | None:
    """X gates and multi-controlled Z/phase(π) on all search qubits, for any n (None otherwise)."""
    from qiskit.circuit.library import IGate, XGate

    pos = {q: i for i, q in enumerate(search)}
    mask, i = 0, 0
    flipped: set[int] = set()
    while i < len(leaves):
        op, qubits = leaves[i]
        step, flip = 1, None
        if isinstance(op, XGate):
            if qubits[0] in pos:
                mask ^= 1 << pos[qubits[0]]
            else:
                anc ^= 1 << qubits[0]
        elif not isinstance(op, IGate):
            flip = _z_flip(op, qubits)
            if flip is None and i + 2 < len(leaves):
                flip, step = _hxh_flip(leaves[i : i + 3]), 3
            if flip is None or not set(search) <= set(flip[0]):
                return None  # another engine decides
            state, active = 0, True
            for j, q in enumerate(flip[0]):
                bit = (flip[1] >> j) & 1
                if q in pos:
                    state |= bit << pos[q]
                elif (anc >> q) & 1 != bit:
                    active = False
            if active:
                flipped ^= {state ^ mask}
        i += step
    if mask:
        n = len(search)
        raise _NotDiagonal(
            f"flips search bits {_bits(mask, n)} without undoing them (not diagonal)"
        )
    return _Diagonal(None, frozenset(flipped), anc, "symbolic")


class _Blocks:
    """Establishes blocks' actions once per distinct (gate sequence, ancilla state)."""

    def __init__(self, search: Sequence[int], width: int, limits: QasmLimits) -> None:
        self.search, self.width, self.limits = list(search), width, limits
        self.memo: dict[Any, _Diagonal | _NotDiagonal] = {}
        self.used: set[str] = set()
        self.sigs: dict[int, tuple[Any, Any]] = {}  # id(gate) -> (gate, signature)

    def _sig(self, op: Any) -> Any:
        if id(op) not in self.sigs:  # the gate is kept, so its id is not reused
            self.sigs[id(op)] = (op, _sig(op))
        return self.sigs[id(op)][1]

    def action(self, part: Sequence[Leaf], anc: int) -> _Diagonal:
        key = (tuple((self._sig(op), q) for op, q in part), anc)
        if key not in self.memo:
            try:
                self.memo[key] = self._establish(_expand(part), anc)
            except _NotDiagonal as err:
                self.memo[key] = err
        found = self.memo[key]
        if isinstance(found, _NotDiagonal):
            raise found
        self.used.add(found.how)
        return found

    def _establish(self, leaves: Sequence[Leaf], anc: int) -> _Diagonal:
        s, lim = self.search, self.limits
        found = (
            _symbolic_block(leaves, s, anc)
            or _exact_block(leaves, s, anc, self.width, lim)
            or _probe_block(leaves, s, anc, lim)
        )
        if found is None:
            qubits = len(set(s) | {q for _, qs in leaves for q in qs})
            raise QasmImportError(
                f"a block of {len(leaves)} gates on {qubits} qubits is too large to verify: over "
                f"QasmLimits.max_exact_qubits={lim.max_exact_qubits} search qubits (or "
                f"max_exact_terms) and max_probe_qubits={lim.max_probe_qubits}; raise them (a probe "
                f"holds 2^{qubits} amplitudes)"
            )
        return found


def _classes(d: _Diagonal, n: int) -> np.ndarray:
    """The states whose phase is -c, c = the phase of |0...0>, of a block whose phases are ±c
    (sorted); a block with any other phase is not a phase oracle."""
    if d.phases is None:
        return np.array(sorted(d.flipped), dtype=np.int64)
    c = complex(d.phases[0])
    minus = np.abs(d.phases + c) < _TOL
    other = ~minus & (np.abs(d.phases - c) >= _TOL)
    if other.any():
        x = int(np.flatnonzero(other)[0])
        angle = np.angle(d.phases[x] / c) / np.pi
        raise _NotDiagonal(
            f"gives |{_bits(x, n)}> the relative phase {angle:.4g}π, not 0 or π (not a phase flip)"
        )
    return np.flatnonzero(minus)


def _complement(states: np.ndarray, n: int) -> np.ndarray:
    if n > 26:
        raise QasmImportError(f"the oracle marks more than half of the 2^{n} states")
    keep = np.ones(2**n, dtype=bool)
    keep[states] = False
    return np.flatnonzero(keep)


def _marked(minus: np.ndarray, n: int) -> np.ndarray:
    """The marked set of a phase oracle c·(I - 2 P_minus): the smaller phase class (O_S and
    O_{S^c} differ by a global phase only, and Grover gives both the same distribution)."""
    if 2 * len(minus) < 2**n:
        return minus
    if 2 * len(minus) > 2**n:
        return _complement(minus, n)
    raise QasmImportError(
        f"the oracle flips exactly half of the {2**n} basis states, so which half is marked is "
        "ambiguous (Grover then gives the uniform distribution for any k); mark fewer states"
    )


def _is_reflection(minus: np.ndarray, n: int) -> bool:
    """Phases -c on |0...0> only (or on everything else): c·(I - 2|0><0|), a reflection."""
    return (len(minus) == 1 and minus[0] == 0) or (len(minus) == 2**n - 1 and minus[0] == 1)


def _search_qubits(circ: _Circuit) -> list[int]:
    """Measured qubits in clbit order (outcome bit i = clbit i); unmeasured: those whose first
    gate is ``h``, in index order."""
    if circ.measured:
        if len(circ.measured) != circ.num_clbits:
            raise QasmImportError(
                f"{circ.num_clbits} classical bits but {len(circ.measured)} measured; measure each "
                "search qubit into its own bit and declare no other bits"
            )
        return sorted(circ.measured, key=circ.measured.__getitem__)
    first: dict[int, str] = {}
    for _, op, qubits in circ.ops:
        for q in qubits:
            first.setdefault(q, op.name)
    return [q for q in range(circ.num_qubits) if first.get(q) == "h"]


def _layer_windows(leaves: Sequence[Item], search: Sequence[int]) -> list[list[int]]:
    """Candidate Hadamard layers: per run of consecutive ``h`` on search qubits, the positions p
    where ``h`` on every search qubit once starts. A run longer than n (an ``h`` that closes or
    opens a neighbouring block, e.g. the ``h`` around an ``mcx`` target) has several."""
    want, n = set(search), len(search)
    from qiskit.circuit.library import HGate

    is_h = [isinstance(op, HGate) and q[0] in want for _, op, q in leaves] + [False]
    runs, i = [], 0
    while i < len(leaves):
        if not is_h[i]:
            i += 1
            continue
        end = is_h.index(False, i)
        windows = [
            p for p in range(i, end - n + 1) if {leaves[p + j][2][0] for j in range(n)} == want
        ]
        if windows:
            runs.append(windows)
        i = end
    return runs


@dataclass(frozen=True)
class GroverImport:
    """A circuit recognised as Grover search, and how that was established."""

    problem: GroverProblem
    search_qubits: tuple[int, ...]  # circuit qubit of outcome bit i (bit 0 = rightmost character)
    num_qubits: int  # all qubits of the circuit, ancillas included
    oracle_only: bool  # the input was a gate definition only; k is the caller's (default k*)
    verified: tuple[str, ...]  # engines that established the blocks: symbolic, exact, probe
    aer_max_abs_diff: float | None = None  # whole circuit simulated by Aer vs the closed form

    def distribution(self) -> Any:
        """The exact distribution in closed form (:class:`~quantum.simulate.TwoLevelDistribution`)."""
        from quantum.simulate import two_level

        return two_level(self.problem)


@dataclass
class _Walk:
    """The search for Grover structure in one circuit: its blocks, in order."""

    circ: _Circuit
    search: list[int]
    leaves: list[Item]
    blocks: _Blocks
    names: dict[int, str]

    def where(self, part: Sequence[Item]) -> str:
        tops = sorted({at for at, _, _ in part})
        if not tops:
            return "(no gates between two Hadamard layers: a call is missing here)"
        shown = ", ".join(f"#{t} {self.names[t]!r}" for t in tops[:4])
        return f"(top-level instruction{'s' if len(tops) > 1 else ''} {shown}{', ...' if len(tops) > 4 else ''})"

    def action(self, part: Sequence[Item], anc: int, what: str) -> _Diagonal:
        try:
            return self.blocks.action([(op, q) for _, op, q in part], anc)
        except _NotDiagonal as err:
            raise QasmImportError(
                f"not a Grover circuit: {what} {self.where(part)} {err}"
            ) from None


def _missing_diffuser(walk: _Walk, part: Sequence[Item]) -> str:
    """'oracle call i of K has no diffuser after it' when a block holds two named oracle calls."""
    tops = sorted({at for at, _, _ in part})
    names = [walk.names[t] for t in tops]
    if len(tops) >= 2 and len(set(names)) == 1 and names[0] not in ("h", "x"):
        calls = sorted(at for at, name in walk.names.items() if name == names[0])
        i = calls.index(tops[0]) + 1
        return f"; oracle call {i} of {len(calls)} ({names[0]!r}) has no diffuser after it"
    return ""


def _recognise(circ: _Circuit, limits: QasmLimits) -> tuple[list[int], np.ndarray, int, _Blocks]:
    """(search qubits, marked states, k, blocks) of a Grover circuit, or QasmImportError."""
    search = _search_qubits(circ)
    n = len(search)
    if not 1 <= n <= 60:
        raise QasmImportError(
            f"{n} search qubits (measured, or starting with h); a Grover circuit has 1..60"
        )
    walk = _Walk(
        circ,
        search,
        _items(circ, limits, search),
        _Blocks(search, circ.num_qubits, limits),
        {at: op.name for at, op, _ in circ.ops},
    )
    runs = _layer_windows(walk.leaves, search)
    if not runs:
        raise QasmImportError(
            "not a Grover circuit: no Hadamard layer (h on every search qubit); Grover starts "
            "with H on |0...0>"
        )
    first = runs[0][0]
    early = next((leaf for leaf in walk.leaves[:first] if set(leaf[2]) & set(search)), None)
    if early is not None:
        raise QasmImportError(
            f"not a Grover circuit: instruction #{early[0]} ({walk.names[early[0]]!r}) acts on a "
            "search qubit before the first Hadamard layer; Grover starts with H on |0...0>"
        )
    anc = _prefix_state(walk.leaves[:first], circ.num_qubits)
    marked, k, end = _pairs(walk, runs, first + n, anc)
    _check_tail(walk, walk.leaves[end:], k)
    return search, marked, k, walk.blocks


def _prefix_state(prefix: Sequence[Item], width: int) -> int:
    """The ancillas' basis state after the gates before the first Hadamard layer."""
    if not prefix:
        return 0
    terms = _run_exact(_expand(prefix), np.zeros(1, np.int64), width, 1 << 16)
    if terms is None or len(terms.basis) != 1:
        raise QasmImportError(
            "not a Grover circuit: the gates before the first Hadamard layer put the ancillas "
            "into a superposition; prepare them in a basis state (x gates)"
        )
    return int(terms.basis[0])


def _next_block(
    walk: _Walk, runs: list[list[int]], cur: int, anc: int, what: str
) -> tuple[int, _Diagonal] | None:
    """The next Hadamard layer after ``cur`` and the diagonal block before it: of a run's
    candidate layers, the first that leaves a diagonal block (h·D is never diagonal if D is)."""
    options = next(([p for p in run if p >= cur] for run in runs if run[-1] >= cur), [])
    error = None
    for p in options:
        try:
            return p, walk.blocks.action([(op, q) for _, op, q in walk.leaves[cur:p]], anc)
        except _NotDiagonal as err:
            error = error or err
    if error is not None:
        raise QasmImportError(
            f"not a Grover circuit: {what} {walk.where(walk.leaves[cur : options[0]])} {error}"
        )
    return None


def _pairs(walk: _Walk, runs: list[list[int]], cur: int, anc: int) -> tuple[np.ndarray, int, int]:
    """Walk the blocks between Hadamard layers: oracle O_S, reflection, O_S, reflection, ...
    Returns (S, k, position after the last layer)."""
    n = len(walk.search)
    marked: np.ndarray | None = None
    j = 0
    while True:
        call = j // 2 + 1
        what = f"oracle call {call}" if j % 2 == 0 else f"diffuser {call}"
        found = _next_block(walk, runs, cur, anc, what)
        if found is None:
            break
        p, d = found
        part = walk.leaves[cur:p]
        minus = _classes_or_fail(walk, d, n, part, what)
        if j % 2 == 0:
            marked = _check_oracle(walk, part, what, minus, marked)
        elif not _is_reflection(minus, n):
            raise QasmImportError(
                f"not a Grover circuit: {what} {walk.where(part)} is not the reflection about "
                f"the uniform state (between its Hadamard layers it flips {_show(minus, n)}, "
                "not |0...0>)"
            )
        anc, cur, j = d.anc_out, p + n, j + 1
    if marked is None:
        raise QasmImportError(
            "not a Grover circuit: it applies no oracle (k = 0): the uniform distribution it "
            "prepares names no marked state; use circuit_distribution for its distribution"
        )
    if j % 2:
        raise QasmImportError(
            f"not a Grover circuit: oracle call {j // 2 + 1} has no diffuser after it (only a "
            "Hadamard layer follows)"
        )
    return marked, j // 2, cur


def _check_oracle(
    walk: _Walk, part: Any, what: str, minus: np.ndarray, marked: np.ndarray | None
) -> np.ndarray:
    n = len(walk.search)
    if len(minus) == 0 or len(minus) == 2**n:
        raise QasmImportError(
            f"not a Grover circuit: {what} {walk.where(part)} flips no state (it is the identity "
            f"up to a global phase){_missing_diffuser(walk, part)}"
        )
    states = _marked(minus, n)
    if marked is not None and not np.array_equal(states, marked):
        raise QasmImportError(
            f"not a Grover circuit: {what} {walk.where(part)} marks {_show(states, n)}, but "
            f"oracle call 1 marks {_show(marked, n)}"
        )
    return states


def _classes_or_fail(walk: _Walk, d: _Diagonal, n: int, part: Any, what: str) -> np.ndarray:
    try:
        return _classes(d, n)
    except _NotDiagonal as err:
        raise QasmImportError(f"not a Grover circuit: {what} {walk.where(part)} {err}") from None


def _show(states: np.ndarray, n: int) -> str:
    shown = ", ".join(_bits(s, n) for s in states[:4])
    return f"{len(states)} state{'s' if len(states) != 1 else ''} {{{shown}{', ...' if len(states) > 4 else ''}}}"


def _check_tail(walk: _Walk, tail: Sequence[Item], k: int) -> None:
    """After the last Hadamard layer only measurements and ancilla-only gates may follow (they
    cannot change the search qubits' distribution)."""
    touching = [leaf for leaf in tail if set(leaf[2]) & set(walk.search)]
    if touching:
        at = touching[0][0]
        raise QasmImportError(
            f"not a Grover circuit: after diffuser {k} of {k}, instruction #{at} "
            f"({walk.names[at]!r}) acts on search qubits: oracle call {k + 1} of {k + 1} has no "
            "diffuser after it, or a gate was added before measurement"
        )


# --------------------------------------------------------------------------------------------
# Public entry points


def import_grover(
    source: str | bytes | QuantumCircuit,
    *,
    limits: QasmLimits | None = None,
    iterations: int | None = None,
    oracle_style: str = "x_mcz_x",
    oracle_gate: str = "Oracle",
    flag_qubits: int = 0,
    simulate: str = "auto",
) -> GroverImport:
    """The Grover problem an OpenQASM 3 circuit computes, proven as the module docstring says.

    Args:
        source: OpenQASM 3 text (or bytes, or an already parsed ``QuantumCircuit``): a full circuit,
            or a program that only defines gates (then ``oracle_gate`` is read as the oracle, the
            anchors' oracle-only input).
        limits: input bounds (:class:`QasmLimits`).
        iterations: oracle-only input only: k (default: the optimal floor(pi/4 sqrt(N/t)), the
            anchors' convention). A full circuit's k is the number of oracle/diffuser pairs.
        oracle_style: recorded in the returned problem (it names how *we* would build the
            circuit; the distribution does not depend on it).
        oracle_gate: the gate an oracle-only input defines.
        flag_qubits: oracle-only input only: that many trailing gate qubits are flags held in |1>
            (the ``mcp_flag`` style's ancilla).
        simulate: ``"auto"`` (Aer checks the whole circuit against the closed form when it fits
            ``max_simulate_qubits`` and ``max_simulate_work``), ``"always"`` or ``"never"``.

    Raises:
        QasmImportError: unreadable input, or a circuit that is not Grover search (the message
            names the block and what it does instead).
    """
    limits = limits or QasmLimits()
    if simulate not in ("auto", "always", "never"):
        raise QasmImportError(f"simulate={simulate!r}; use 'auto', 'always' or 'never'")
    text = isinstance(source, str | bytes)
    if text:
        program = _parse_ast(_check_text(source, limits), limits)
        if _is_definitions_only(program):
            return _import_oracle(
                program, limits, iterations, oracle_style, oracle_gate, flag_qubits
            )
        qc = _convert(program)
    else:
        qc = _circuit(source)
    if iterations is not None or flag_qubits:
        raise QasmImportError(
            "iterations= and flag_qubits= apply to oracle-only input; a full circuit's k and "
            "ancillas are read from the circuit"
        )
    circ = _unroll(qc, limits, from_text=text)
    search, marked, k, blocks = _recognise(circ, limits)
    problem = _problem(len(search), marked, k, oracle_style)
    diff = _simulation_check(circ, search, problem, limits, simulate)
    return GroverImport(
        problem, tuple(search), circ.num_qubits, False, tuple(sorted(blocks.used)), diff
    )


def _circuit(source: Any) -> QuantumCircuit:
    from qiskit import QuantumCircuit

    if not isinstance(source, QuantumCircuit):
        raise QasmImportError(
            f"QASM input must be a str (or bytes, or a qiskit QuantumCircuit), not "
            f"{type(source).__name__}"
        )
    return source


def import_grover_file(path: str | os.PathLike[str], **kwargs: Any) -> GroverImport:
    """:func:`import_grover` of a file read by :func:`read_qasm` (bounded, regular files only)."""
    return import_grover(read_qasm(path, kwargs.get("limits")), **kwargs)


def _problem(n: int, marked: np.ndarray, k: int | None, style: str) -> GroverProblem:
    try:
        return GroverProblem(n, [_bits(s, n) for s in marked], k, style)
    except GroverProblemError as err:
        raise QasmImportError(f"the circuit's Grover problem is not valid: {err}") from None


def _is_definitions_only(program: Any) -> bool:
    from openqasm3 import ast

    quantum = (
        ast.QuantumGate,
        ast.QuantumPhase,
        ast.QuantumMeasurementStatement,
        ast.ForInLoop,
        ast.QubitDeclaration,
    )
    return not any(isinstance(s, quantum) for s in program.statements)


def _import_oracle(
    program: Any, limits: QasmLimits, iterations: int | None, style: str, gate: str, flags: int
) -> GroverImport:
    """An oracle-only program: apply ``gate`` once and read its phase flips."""
    from openqasm3 import ast

    defs = {s.name.name: s for s in program.statements if isinstance(s, ast.QuantumGateDefinition)}
    if gate not in defs:
        raise QasmImportError(
            f"the program applies no gate and defines no gate {gate!r} to read as an oracle "
            f"(it defines {sorted(defs) or 'none'}); give a full circuit or the oracle definition"
        )
    width = len(defs[gate].qubits)
    if defs[gate].arguments or not 0 <= flags < width or width - flags > 60:
        raise QasmImportError(
            f"gate {gate!r} has {width} qubits and {len(defs[gate].arguments)} parameters; an "
            f"oracle has 1..60 search qubits, no parameters, and fewer flags ({flags}) than qubits"
        )
    register = ast.Identifier("_oracle_qubits")
    program.statements.append(ast.QubitDeclaration(register, ast.IntegerLiteral(width)))
    args = [ast.IndexedIdentifier(register, [[ast.IntegerLiteral(i)]]) for i in range(width)]
    program.statements.append(ast.QuantumGate([], ast.Identifier(gate), [], args))  # type: ignore[arg-type]
    circ = _unroll(_convert(program), limits)
    n = width - flags
    search = list(range(n))
    blocks = _Blocks(search, width, limits)
    part = [(op, q) for _, op, q in _items(circ, limits, search)]
    try:
        d = blocks.action(part, sum(1 << q for q in range(n, width)))
        minus = _classes(d, n)
    except _NotDiagonal as err:
        raise QasmImportError(f"gate {gate!r} is not a phase oracle: it {err}") from None
    if len(minus) == 0 or len(minus) == 2**n:
        raise QasmImportError(f"gate {gate!r} flips no state: it marks nothing")
    problem = _problem(n, _marked(minus, n), iterations, style)
    return GroverImport(problem, tuple(search), width, True, tuple(sorted(blocks.used)))


def _simulation_check(
    circ: _Circuit, search: Sequence[int], problem: GroverProblem, limits: QasmLimits, mode: str
) -> float | None:
    """Aer's distribution of the whole circuit against the closed form (see :class:`QasmLimits`):
    ``"auto"`` where it fits the limits, ``"always"`` wherever memory allows."""
    if mode == "never":
        return None
    probs = _aer_probabilities(circ, search, limits, mode == "always", required=mode == "always")
    if probs is None:
        return None
    from quantum.simulate import two_level

    diff = float(np.max(np.abs(probs - two_level(problem).dense())))
    if diff > _TOL:
        raise QasmImportError(
            f"the circuit's structure reads as {problem}, but Aer's distribution differs from its "
            f"closed form by {diff:.3g}; not imported"
        )
    return diff


def _aer_probabilities(
    circ: _Circuit, search: Sequence[int], limits: QasmLimits, force: bool, required: bool
) -> np.ndarray | None:
    """Aer's statevector probabilities of the search qubits, or None (``required=False``) past
    ``max_simulate_qubits`` / ``max_simulate_work`` (gates x 2^qubits; ``force`` ignores both) or
    memory. Aer gets standard gates only, never a custom gate: its transpiler would run a custom
    ``gate mcx`` as Aer's own mcx by name, whatever the file's definition says."""
    from qiskit_aer import AerSimulator

    from quantum.simulate import available_memory

    items = _items(circ, limits)
    gates = sum(len(op.leaves) if isinstance(op, _Unit) else 1 for _, op, _ in items)
    q, need = circ.num_qubits, 24 * 2.0**circ.num_qubits
    work = gates * 2.0**q
    if need > available_memory() or (
        not force and (q > limits.max_simulate_qubits or work > limits.max_simulate_work)
    ):
        if not required:
            return None
        raise QasmImportError(
            f"{gates:,} gates on {q} qubits are too much to simulate exactly here (about "
            f"{need / 2**30:.1f} GiB, {work:.3g} amplitude updates; QasmLimits."
            f"max_simulate_qubits={limits.max_simulate_qubits}, max_simulate_work="
            f"{limits.max_simulate_work:.3g})"
        )
    qc = _leaf_circuit([(op, qs) for _, op, qs in items], q, {i: i for i in range(q)})
    qc.save_probabilities(list(search))
    result = AerSimulator(method="statevector").run(qc).result()
    return np.asarray(result.data()["probabilities"], dtype=np.float64)


def circuit_distribution(
    source: str | bytes | QuantumCircuit, limits: QasmLimits | None = None
) -> np.ndarray:
    """Exact output distribution of any circuit (Grover or not), by Aer's statevector.

    Returns float64 of length 2^m over the measured qubits in clbit order (all qubits when none is
    measured); index = the outcome read as Qiskit prints counts, ``int(bitstring, 2)``. Bounded by
    ``max_simulate_qubits`` (qubits, ancillas included) and ``max_simulate_work`` (gates x 2^qubits).
    """
    limits = limits or QasmLimits()
    text = isinstance(source, str | bytes)
    qc = parse_qasm(source, limits) if text else _circuit(source)  # type: ignore[arg-type]
    circ = _unroll(qc, limits, from_text=text)
    search = sorted(circ.measured, key=circ.measured.__getitem__) or list(range(circ.num_qubits))
    probs = _aer_probabilities(circ, search, limits, force=False, required=True)
    assert probs is not None  # required=True raises instead
    return probs


def gate_definitions(text: str | bytes, limits: QasmLimits | None = None) -> dict[str, int]:
    """``{gate name: number of qubits}`` of the gates ``text`` defines (bounded parse, no build)."""
    from openqasm3 import ast

    program = _parse_ast(_check_text(text, limits or QasmLimits()), limits or QasmLimits())
    return {
        s.name.name: len(s.qubits)
        for s in program.statements
        if isinstance(s, ast.QuantumGateDefinition)
    }
