"""Text renderings of Grover problems: OpenQASM 3 in three shapes, a compact token form, the answer.

Formats of :func:`render`:

- ``"qasm3"``: ``qiskit.qasm3.dumps`` of :func:`~quantum.circuits.build_circuit`: the GroverGPT-2
  structure (``gate mcmt``/``gate Oracle``/``gate Diffuser`` definitions, registers, ``h``,
  k x ``Oracle; Diffuser;``, measurements). Length grows with k ~ sqrt(2**n).
- ``"qasm3_loop"``: the same program with the iterations in a QASM3 ``for`` loop, so its length
  is O(n t) whatever k is. Written directly as text (no Qiskit exporter, ~100x faster) for the
  ``x_mcz_x`` and ``mcp_flag`` styles, using the stdgates modifiers ``ctrl(m) @ z`` and
  ``ctrl(m) @ p(pi)``; through Qiskit's exporter for ``phase_oracle`` and ``diagonal``.
- ``"qasm3_oracle"``: a QASM3 program holding only the ``gate Oracle`` definition (the anchors'
  oracle-only input), written the same way as in ``"qasm3_loop"``.
- ``"compact"``: the quantum-native token sequence of :mod:`quantum.tokenizer`, tokens separated by
  single spaces, numbers and bitstrings written one digit per token::

      qubits 5 h repeat 3 oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse end measure

  read as: n qubits, H on all, repeat k times { oracle of the given style that flips the phase of
  each listed basis state (bits in Qiskit order, qubit 0 last), diffuser }, measure all. Length is
  9 + digits(n) + digits(k) + t (n + 1) tokens: O(n t), independent of k.
- ``"compact_scaled"``: the same circuit with the iteration count on the scale of Grover's
  rotation, so that a model reads k relative to sqrt(2**n)::

      h oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse repeat | 3 : 0 measure

  ``repeat`` is followed by the register of :func:`scaled_register`: x = k / 2**c with
  c = ceil(n/2) as a fixed-point number whose last three fraction bits form one octal digit:
  the fraction bits below them in binary (least significant first, present from n = 7), ``|``,
  the octal digit F, the point, then the integer part I in decimal, so x = I + F / 8 + the low
  bits. The point is ``.`` for even n (x = k / sqrt(N)) and ``:`` for odd n (x = k / sqrt(2N)).
  n is not written as a number: it is the length of each flip block (and c with the point's
  parity). Why: the success probability sin^2((2k+1) asin sqrt(t/N)) -> sin^2(2 x sqrt(t) + ...)
  depends on k only through x, so ``F <point> I`` means the same rotation at n = 6 and at
  n = 60, and a model reads it as three content tokens (no bit counting); the low bits, absent
  at n <= 6, move the angle by less than one step of n = 6's grid. Length
  9 + t (n + 1) + max(0, c - 3) + digits(I): O(n t).
- ``"answer"``: the exact distribution in its two-level closed form (see
  :class:`~quantum.simulate.TwoLevelDistribution`), same token conventions::

      marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked 4 . 8 0 6 6 e - 0 1 p_rest 1 . 2 8 9 4 e - 0 3

  every marked state has probability ``p_marked`` and every other of the 2**n states ``p_rest``
  (5 significant digits, exponent always signed and two digits). Exact for any n and k.
- ``"answer_anchor"``: GroverGPT-2's label text (``dataset_generate_MMS.py``), byte for byte, for
  anchor-comparable runs: a Python dict of the marked states, then the first 30 - t unmarked
  states in lexicographic order, each probability with 4 decimals (``'%.4e'`` when that rounds
  to 0), one entry per line, e.g. ``{'01101': 0.4807,\n '10010': 0.4807,\n '00000': 0.0013, ...}``.
  Truncated (mass < 1 once 2**n > 30), as the anchor's.
"""

from __future__ import annotations

import re
from typing import Any

from quantum.problem import GroverProblem, GroverProblemError
from quantum.simulate import MAX_CIRCUIT_ITERATIONS, TwoLevelDistribution, two_level

__all__ = [
    "FORMATS",
    "answer_text",
    "format_probability",
    "parse_answer_text",
    "parse_compact",
    "render",
    "scaled_register",
]

FORMATS = (
    "qasm3",
    "qasm3_loop",
    "qasm3_oracle",
    "compact",
    "compact_scaled",
    "answer",
    "answer_anchor",
)
WINDOW = 3  # fraction bits in the register's octal digit: the resolution of n = 5 and 6
_HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'


def _spaced(text: str) -> str:
    """'0110' -> '0 1 1 0': one token per character."""
    return " ".join(text)


def format_probability(p: float) -> str:
    """A probability as 5 significant digits in scientific notation, e.g. '4.8066e-01'."""
    return f"{p:.4e}"


def answer_text(dist: TwoLevelDistribution) -> str:
    """The ``"answer"`` rendering of a two-level distribution (see module docstring)."""
    parts = [f"marked {_spaced(s)}" for s in dist.marked]
    parts.append(f"p_marked {_spaced(format_probability(dist.p_marked_each))}")
    parts.append(f"p_rest {_spaced(format_probability(dist.p_rest_each))}")
    return " ".join(parts)


def anchor_answer_text(dist: TwoLevelDistribution, max_states: int = 30) -> str:
    """The ``"answer_anchor"`` rendering: GroverGPT-2's truncated probability dict, byte for byte.

    As ``generate_state_probabilities`` and ``generate_reasoning`` in GroverGPT-plus's
    ``dataset_generate_MMS.py``: the marked states, then the first ``max_states - t`` unmarked
    states in lexicographic order; each marked value ``round(P / t, 4)`` printed with 4 decimals,
    each unmarked value ``round((1 - P) / (N - t), 4)`` likewise, or ``'%.4e'`` when that rounds to
    0; entries joined by ``",\\n "``. The anchor computes P at the optimal k; here P is the
    problem's own k (the same text for the anchor's circuits, which all use the optimal k).
    """
    n, t = dist.n_qubits, len(dist.marked)
    p_total = dist.success_probability
    items = [(s, f"{round(p_total / t, 4):.4f}") for s in dist.marked]
    raw = (1 - p_total) / (2**n - t) if 2**n > t else 0.0
    rest = f"{raw:.4e}" if round(raw, 4) == 0.0 and raw != 0 else f"{round(raw, 4):.4f}"
    marked = set(dist.marked)
    i = 0
    while len(items) < max_states and i < 2**n:
        s = format(i, f"0{n}b")
        if s not in marked:
            items.append((s, rest))
        i += 1
    return "{" + ",\n ".join(f"'{s}': {v}" for s, v in items) + "}"


def parse_answer_text(text: str) -> TwoLevelDistribution:
    """Strict inverse of :func:`answer_text` (raises :class:`GroverProblemError` if malformed).

    ``p_rest`` may be left out: the two-level form has one free number, and normalisation gives
    p_rest = (1 - t p_marked) / (2**n - t), so a model can be trained to emit only the marked
    states and ``p_marked``. Amplitudes are returned non-negative and ``iterations`` is -1 (neither
    is in the text).
    """
    words = text.split()
    marked: list[str] = []
    values: dict[str, float] = {}
    i = 0
    while i < len(words):
        key = words[i]
        j = i + 1
        while j < len(words) and words[j] not in ("marked", "p_marked", "p_rest"):
            j += 1
        body = "".join(words[i + 1 : j])
        if key == "marked":
            if not body or body.strip("01"):
                raise GroverProblemError(f"'marked {body}' is not a bitstring")
            marked.append(body)
        elif key in ("p_marked", "p_rest"):
            try:
                values[key] = float(body)
            except ValueError:
                raise GroverProblemError(f"'{key} {body}' is not a number") from None
        else:
            raise GroverProblemError(f"unexpected word {key!r}; the answer starts with 'marked'")
        i = j
    if not marked or "p_marked" not in values or len({len(s) for s in marked}) != 1:
        raise GroverProblemError(
            f"answer {text!r} needs 'marked <bits>' (equal lengths) and 'p_marked <number>'"
        )
    n, t = len(marked[0]), len(marked)
    p_m = values["p_marked"]
    p_r = values.get("p_rest", max(0.0, 1.0 - t * p_m) / (2.0**n - t))
    return TwoLevelDistribution(n, tuple(sorted(marked)), -1, p_m**0.5, p_r**0.5)


def _compact(problem: GroverProblem) -> str:
    flips = " ".join(f"flip {_spaced(s)}" for s in problem.marked)
    return (
        f"qubits {_spaced(str(problem.n_qubits))} h repeat {_spaced(str(problem.iterations))} "
        f"oracle {problem.oracle_style} {flips} diffuse end measure"
    )


def scaled_register(n_qubits: int, k: int) -> str:
    r"""k as the fixed-point number x = k / 2**c, c = ceil(n/2): ``<low bits> | F <point> I``.

    F is the octal digit of x's first three fraction bits (zero-padded when c < 3), the bits
    below it follow in binary, least significant first, before ``|``; I is x's integer part in
    decimal; the point is ``.`` for even n and ``:`` for odd n. Exact for every k >= 0:
    ``parse_compact`` reads k back.

    >>> scaled_register(20, 804)  # 804 / 2^10 = 0.110 0100100 in binary: F = 6, low bits LSB first
    '0 0 1 0 0 1 0 | 6 . 0'
    >>> scaled_register(3, 5)  # 5 / 4 = 1.01 in binary: F = 010 = 2, I = 1
    '| 2 : 1'
    """
    c = (n_qubits + 1) // 2
    frac = k % 2**c
    low_bits = max(0, c - WINDOW)
    octal = (frac >> low_bits) if low_bits else frac << (WINDOW - c)
    low = format(frac % 2**low_bits, f"0{low_bits}b")[::-1] if low_bits else ""
    point = "." if n_qubits % 2 == 0 else ":"
    return " ".join([*low, "|", str(octal), point, *str(k >> c)])


def _compact_scaled(problem: GroverProblem) -> str:
    flips = " ".join(f"flip {_spaced(s)}" for s in problem.marked)
    return (
        f"h oracle {problem.oracle_style} {flips} "
        f"diffuse repeat {scaled_register(problem.n_qubits, problem.iterations)} measure"
    )


_COMPACT_RE = re.compile(
    r"qubits((?: \d)+) h repeat((?: \d)+) oracle (\S+)((?: flip(?: [01])+)+) diffuse end measure$"
)
_SCALED_RE = re.compile(
    r"h oracle (\S+)((?: flip(?: [01])+)+) diffuse repeat((?: [01])*) \| ([0-7]) ([.:])((?: \d)+) "
    r"measure$"
)


def parse_compact(text: str) -> GroverProblem:
    """The problem of a ``compact`` or ``compact_scaled`` rendering (strict inverse of :func:`render`).

    The rule-based circuit reader of the ``oracle_1/t`` and ``ceiling`` baselines. Raises
    :class:`GroverProblemError` when ``text`` is not exactly such a rendering.
    """
    text = " ".join(str(text).split())
    m = _COMPACT_RE.match(text)
    if m:
        n, k = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", ""))
        style, flips = m.group(3), m.group(4)
    elif (m := _SCALED_RE.match(text)) is not None:
        style, flips = m.group(1), m.group(2)
        low, octal, point, whole = (m.group(i).replace(" ", "") for i in (3, 4, 5, 6))
        n = len(flips.split("flip")[1].split())
        c = (n + 1) // 2
        frac = int(octal) << len(low) | int(low[::-1] or "0", 2)
        if c < WINDOW:  # the octal digit carries zero padding below the c fraction bits
            frac, pad = divmod(int(octal), 2 ** (WINDOW - c))
        if len(low) != max(0, c - WINDOW) or point != ".:"[n % 2] or (c < WINDOW and pad):
            raise GroverProblemError(f"the register of {text[:80]!r} does not fit n = {n}")
        if len(whole) > 1 and whole[0] == "0":
            raise GroverProblemError(f"the integer part of {text[:80]!r} has a leading zero")
        k = int(whole) << c | frac
    else:
        raise GroverProblemError(f"{text[:80]!r} is not a compact or compact_scaled rendering")
    rows = [r.replace(" ", "") for r in flips.split("flip") if r.strip()]
    if any(len(r) != n for r in rows):
        raise GroverProblemError(f"the flip blocks of {text[:80]!r} do not have {n} bits")
    return GroverProblem(n, rows, k, style)


def _gate_args(n: int, flag: bool) -> str:
    return ", ".join([f"q{i}" for i in range(n)] + (["f"] if flag else []))


def _oracle_gate(problem: GroverProblem) -> str:
    """``gate Oracle ... { ... }`` for the x_mcz_x and mcp_flag styles."""
    n = problem.n_qubits
    flag = problem.oracle_style == "mcp_flag"
    args = _gate_args(n, flag)
    if flag:
        core = f"  ctrl({n}) @ p(pi) {args};\n"
    elif n == 1:
        core = "  z q0;\n"
    else:
        core = f"  ctrl({n - 1}) @ z {args};\n"
    lines = [f"gate Oracle {args} {{\n"]
    for s in problem.marked:
        xs = "".join(f"  x q{i};\n" for i in range(n) if s[n - 1 - i] == "0")
        lines.append(xs + core + xs)
    lines.append("}\n")
    return "".join(lines)


def _diffuser_gate(n: int) -> str:
    args = _gate_args(n, False)
    hs = "".join(f"  h q{i};\n" for i in range(n))
    xs = "".join(f"  x q{i};\n" for i in range(n))
    core = "  z q0;\n" if n == 1 else f"  ctrl({n - 1}) @ z {args};\n"
    return f"gate Diffuser {args} {{\n{hs}{xs}{core}{xs}{hs}}}\n"


def _qasm3_loop_text(problem: GroverProblem) -> str:
    n, k = problem.n_qubits, problem.iterations
    flag = problem.oracle_style == "mcp_flag"
    qs = ", ".join(f"q[{i}]" for i in range(n))
    oracle_args = qs + (", flag[0]" if flag else "")
    body = [_HEADER, _oracle_gate(problem), _diffuser_gate(n), f"bit[{n}] c;\nqubit[{n}] q;\n"]
    if flag:
        body.append("qubit[1] flag;\nx flag[0];\n")
    body.append("".join(f"h q[{i}];\n" for i in range(n)))
    if k > 0:
        body.append(f"for int i in [0:{k - 1}] {{\n  Oracle {oracle_args};\n  Diffuser {qs};\n}}\n")
    body.append("".join(f"c[{i}] = measure q[{i}];\n" for i in range(n)))
    return "".join(body)


def _qiskit_loop_circuit(problem: GroverProblem, oracle_only: bool = False) -> Any:
    """A Qiskit circuit with a ``for`` loop (for the styles Qiskit synthesises)."""
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

    from quantum.circuits import build_oracle, diffuser

    n = problem.n_qubits
    q, c = QuantumRegister(n, "q"), ClassicalRegister(n, "c")
    qc = QuantumCircuit(q, c)
    oracle = build_oracle(problem).to_gate()
    if oracle_only:
        qc = QuantumCircuit(q)
        qc.append(oracle, q)
        return qc
    diff = diffuser(n).to_gate()
    qc.h(q)
    if problem.iterations > 0:
        with qc.for_loop(range(problem.iterations)):
            qc.append(oracle, q)
            qc.append(diff, q)
    qc.measure(q, c)
    return qc


def render(problem: GroverProblem, fmt: str) -> str:
    """Render ``problem`` as text; ``fmt`` is one of :data:`FORMATS` (see module docstring)."""
    if fmt == "compact":
        return _compact(problem)
    if fmt == "compact_scaled":
        return _compact_scaled(problem)
    if fmt == "answer":
        return answer_text(two_level(problem))
    if fmt == "answer_anchor":
        return anchor_answer_text(two_level(problem))
    fast = problem.oracle_style in ("x_mcz_x", "mcp_flag")
    if fmt == "qasm3_loop":
        if fast:
            return _qasm3_loop_text(problem)
        from qiskit import qasm3

        return str(qasm3.dumps(_qiskit_loop_circuit(problem)))
    if fmt == "qasm3_oracle":
        if fast:
            return _HEADER + _oracle_gate(problem)
        from qiskit import qasm3

        text = str(qasm3.dumps(_qiskit_loop_circuit(problem, oracle_only=True)))
        return text[: text.index("qubit[")]  # definitions only, like the fast path
    if fmt == "qasm3":
        if problem.iterations > MAX_CIRCUIT_ITERATIONS:
            raise GroverProblemError(
                f"iterations={problem.iterations} > {MAX_CIRCUIT_ITERATIONS}: the unrolled 'qasm3' "
                "text would repeat every gate that often; use fmt='qasm3_loop' (a for loop)"
            )
        from qiskit import qasm3

        from quantum.circuits import build_circuit

        return str(qasm3.dumps(build_circuit(problem)))
    raise GroverProblemError(f"unknown rendering format {fmt!r}; use one of {FORMATS}")
