"""Grover search problems: the one object every other module of ``quantum`` works from.

A problem is (number of qubits n, the set of marked basis states, the iteration count k, the oracle
style). Everything else (circuits, distributions, renderings, dataset records) is a view of it, and
:attr:`GroverProblem.key` is a content hash of exactly these four fields, so dataset splits and
dedup never depend on how a problem is rendered.

Bit order: a marked state is written as Qiskit prints measurement counts, qubit 0 is the
*rightmost* character, so ``"011"`` means q0=1, q1=1, q2=0 and is basis index ``int("011", 2) == 3``.

Iteration rules (Grover, arXiv quant-ph/9605043; Boyer et al., arXiv quant-ph/9605034), with
N = 2**n, t = number of marked states and theta = asin(sqrt(t / N)):

- ``"floor_pi4"`` (default, GroverGPT-2): k = floor(pi/4 * sqrt(N / t));
- ``"qiskit_algorithms"``: k = round(acos(sqrt(t/N)) / (2 theta)) (``Grover.optimal_num_iterations``
  in qiskit-algorithms, which IBM no longer maintains);
- ``"explicit"``: recorded when the caller passes ``iterations``.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qhybrid.errors import QHybridError

__all__ = [
    "MAX_QUBITS",
    "ITERATION_RULES",
    "ORACLE_STYLES",
    "GroverProblem",
    "GroverProblemError",
    "optimal_iterations",
]

MAX_QUBITS = 60  # the closed form is exact in float64 and basis indices fit in int64 up to here
ORACLE_STYLES = ("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal")
ITERATION_RULES = ("floor_pi4", "qiskit_algorithms")


class GroverProblemError(QHybridError):
    """A Grover problem, backend or rendering request that cannot be built as given."""


def optimal_iterations(n_qubits: int, n_marked: int, rule: str = "floor_pi4") -> int:
    """Grover iteration count for ``n_marked`` of ``2**n_qubits`` states under ``rule``.

    Args:
        n_qubits: number of search qubits n.
        n_marked: number of marked states t, 1 <= t < 2**n.
        rule: ``"floor_pi4"`` (floor(pi/4 sqrt(N/t)), GroverGPT-2) or ``"qiskit_algorithms"``
            (round(acos(sqrt(t/N)) / (2 asin(sqrt(t/N))))).
    """
    ratio = n_marked / 2.0**n_qubits
    if rule == "floor_pi4":
        return math.floor(math.pi / 4 * math.sqrt(1.0 / ratio))
    if rule == "qiskit_algorithms":
        amp = math.sqrt(ratio)
        return round(math.acos(amp) / (2 * math.asin(amp)))
    raise GroverProblemError(
        f"unknown iteration rule {rule!r}; use one of {ITERATION_RULES} or pass iterations=<int>"
    )


def _check_marked(n_qubits: int, marked: Any) -> tuple[str, ...]:
    if isinstance(marked, str) or not isinstance(marked, Sequence | set | frozenset):
        raise GroverProblemError(
            f"marked must be a sequence of bitstrings such as ['0101'], not {marked!r}"
        )
    states: list[str] = []
    for s in marked:
        if not isinstance(s, str):
            raise GroverProblemError(
                f"marked state {s!r} is not a string; write it as a bitstring such as '0101'"
            )
        if len(s) != n_qubits:
            raise GroverProblemError(
                f"marked state {s!r} has {len(s)} bits but n_qubits={n_qubits}; "
                "give every marked state exactly n_qubits characters"
            )
        if s.strip("01"):
            raise GroverProblemError(
                f"marked state {s!r} is not binary; use only the characters '0' and '1'"
            )
        states.append(s)
    if not states:
        raise GroverProblemError("marked is empty; give at least one marked bitstring")
    if len(set(states)) != len(states):
        dupes = sorted({s for s in states if states.count(s) > 1})
        raise GroverProblemError(f"marked states {dupes} appear more than once; list each once")
    if len(states) >= 2**n_qubits:
        raise GroverProblemError(
            f"all {2**n_qubits} basis states of n_qubits={n_qubits} are marked; Grover search "
            "needs at least one unmarked state, so mark fewer"
        )
    return tuple(sorted(states))


@dataclass(frozen=True, init=False)
class GroverProblem:
    """One Grover search instance.

    Args:
        n_qubits: search qubits n, 1 <= n <= 60 (circuit backends have lower limits).
        marked: the marked basis states as bitstrings, qubit 0 rightmost (Qiskit counts order);
            stored sorted, so the order given does not matter.
        iterations: Grover iterations k >= 0; ``None`` applies ``iteration_rule``.
        oracle_style: how the oracle circuit is built: ``"x_mcz_x"`` (X on the 0-bits, a
            multi-controlled Z, X again, per marked state, as GroverGPT-2), ``"mcp_flag"`` (MQT
            Bench: a multi-controlled phase onto an ancilla flag qubit prepared in |1>),
            ``"phase_oracle"`` (a boolean DNF expression synthesised by Qiskit's
            ``PhaseOracleGate``), ``"diagonal"`` (one ``DiagonalGate`` of +-1, n <= 16).
        iteration_rule: rule used when ``iterations`` is None; set to ``"explicit"`` otherwise.
            Not part of :attr:`key` (the circuit does not depend on it).

    >>> p = GroverProblem(3, ["101"])
    >>> p.iterations, p.iteration_rule
    (2, 'floor_pi4')
    """

    n_qubits: int
    marked: tuple[str, ...]
    iterations: int
    oracle_style: str
    iteration_rule: str = field(compare=False)

    def __init__(
        self,
        n_qubits: int,
        marked: Sequence[str],
        iterations: int | None = None,
        oracle_style: str = "x_mcz_x",
        iteration_rule: str = "floor_pi4",
    ) -> None:
        if isinstance(n_qubits, bool) or not isinstance(n_qubits, numbers.Integral):
            raise GroverProblemError(f"n_qubits must be an int, not {n_qubits!r}")
        n = int(n_qubits)
        if not 1 <= n <= MAX_QUBITS:
            raise GroverProblemError(
                f"n_qubits={n} is outside 1..{MAX_QUBITS}; the closed form and int64 basis "
                "indices are exact only in this range"
            )
        states = _check_marked(n, marked)
        if oracle_style not in ORACLE_STYLES:
            raise GroverProblemError(
                f"unknown oracle_style {oracle_style!r}; use one of {ORACLE_STYLES}"
            )
        if iterations is None:
            k = optimal_iterations(n, len(states), iteration_rule)
        else:
            if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral):
                raise GroverProblemError(f"iterations must be an int or None, not {iterations!r}")
            iterations = int(iterations)
            if iterations < 0:
                raise GroverProblemError(
                    f"iterations={iterations} is negative; use k >= 0 "
                    "(0 = uniform superposition only)"
                )
            k, iteration_rule = iterations, "explicit"
        # frozen dataclass: fields are set once, here
        object.__setattr__(self, "n_qubits", n)
        object.__setattr__(self, "marked", states)
        object.__setattr__(self, "iterations", k)
        object.__setattr__(self, "oracle_style", oracle_style)
        object.__setattr__(self, "iteration_rule", iteration_rule)

    @property
    def n_marked(self) -> int:
        """Number of marked states t."""
        return len(self.marked)

    @property
    def marked_indices(self) -> tuple[int, ...]:
        """Basis indices of the marked states, ``int(bitstring, 2)``, ascending."""
        return tuple(sorted(int(s, 2) for s in self.marked))

    @property
    def optimal_iterations(self) -> int:
        """k by the default ``floor_pi4`` rule, for comparing with :attr:`iterations`."""
        return optimal_iterations(self.n_qubits, self.n_marked, "floor_pi4")

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-able form (the input of :attr:`key`) plus the iteration rule."""
        return {
            "n_qubits": self.n_qubits,
            "marked": list(self.marked),
            "iterations": self.iterations,
            "oracle_style": self.oracle_style,
            "iteration_rule": self.iteration_rule,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroverProblem:
        """Inverse of :meth:`to_dict`."""
        rule = d.get("iteration_rule", "explicit")
        return cls(
            int(d["n_qubits"]),
            list(d["marked"]),
            None if rule != "explicit" else int(d["iterations"]),
            d.get("oracle_style", "x_mcz_x"),
            rule if rule != "explicit" else "floor_pi4",
        )

    @property
    def key(self) -> str:
        """sha256 (hex, 64 chars) of the canonical JSON of (n, sorted marked, k, style)."""
        canon = json.dumps(
            [self.n_qubits, list(self.marked), self.iterations, self.oracle_style],
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()
