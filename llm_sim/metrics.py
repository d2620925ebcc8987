"""Metrics for predicted Grover outcome distributions, over the full 2^n support without a 2^n loop.

A prediction lists some states with a probability and may give one probability ``rest_each`` for
every state it does not list (the closed-form answer ``marked=... p_each=... rest_each=...``); a
plain dict answer has ``rest_each = 0``. The truth of a standard Grover problem is two-level: each of
the t marked states has ``p_marked`` and each of the other ``N - t`` states ``p_other``
(Boyer et al. 1998, arXiv quant-ph/9605034):

    theta = asin(sqrt(t / N)),  P = sin^2((2k + 1) theta),  p_marked = P / t,  p_other = (1 - P) / (N - t)

Every sum over the N = 2^n states splits into the states listed by either side (explicit) and the
remaining ``N - |listed|`` states, all with the same pair ``(rest_pred, rest_true)`` (one term times a
count), so each metric costs O(listed) even at n = 40.

Anchor metrics (GroverGPT-2, npj Quantum Inf. 12:48, Eq. 1-3) and their pitfalls:

- ``search_accuracy`` (SA@tau, tau = 0.3): top-t predicted states with p >= tau, share that are
  marked. Structurally 0 for t >= 4 even for a perfect model (p_marked <= 1/t < 0.3).
- ``classical_fidelity`` raw: ``(sum_i sqrt(p_i q_i))^2``; exceeds 1 when the predicted mass does.
  ``renormalize=True`` divides the prediction by its mass first (a true fidelity).

Sound replacements: ``set_accuracy`` (top-t set equals the marked set, no threshold, ties count
against), ``marked_recall``, ``total_variation``, ``hellinger``, ``marked_probability_error``,
``mass_error`` and the parse rate of :func:`llm_sim.parse.parse_answer` outputs. ``named_set``
(the states an answer lists explicitly are exactly the marked set) separates naming the marked set
from ranking it: a closed-form answer can name it right with a probability that ranks it wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qhybrid.errors import QHybridError

__all__ = [
    "Distribution",
    "MetricError",
    "classical_fidelity",
    "grover_two_level",
    "hellinger",
    "marked_probability_error",
    "marked_recall",
    "mass",
    "mass_error",
    "parse_rate",
    "score",
    "search_accuracy",
    "set_accuracy",
    "top_states",
    "total_variation",
    "true_distribution",
]

METRIC_NAMES = (
    "sa_0.3",
    "set_acc",
    "named_set",
    "marked_recall",
    "cf_raw",
    "cf_renorm",
    "tvd",
    "tvd_raw",
    "hellinger",
    "p_marked_err",
    "mass_error",
    "parsed",
)


class MetricError(QHybridError):
    """Inputs to a metric that do not describe distributions over the same n qubits."""


class ProblemLike(Protocol):
    n_qubits: int
    marked: Sequence[str]
    iterations: int | None


@dataclass(frozen=True)
class Distribution(Mapping[str, float]):
    """Probabilities over n-bit strings: the listed ``probs`` and ``rest_each`` for every other state.

    A read-only mapping of the listed states (so it passes wherever a ``{bitstring: p}`` dict does).
    """

    probs: dict[str, float]
    rest_each: float = 0.0  # probability of each state not in probs
    n_qubits: int | None = None  # bit length; inferred from the keys when None

    def __getitem__(self, key: str) -> float:
        return self.probs[key]

    def __iter__(self) -> Any:
        return iter(self.probs)

    def __len__(self) -> int:
        return len(self.probs)


@dataclass(frozen=True)
class _Sparse:
    probs: dict[str, float]
    rest: float
    n: int | None


def _as_sparse(d: Mapping[str, float]) -> _Sparse:
    rest = float(getattr(d, "rest_each", 0.0) or 0.0)
    n = getattr(d, "n_qubits", None)
    probs = {str(k): float(v) for k, v in d.items()}
    lengths = {len(k) for k in probs}
    if len(lengths) > 1:
        raise MetricError(f"states of different bit lengths {sorted(lengths)} in one distribution")
    if n is None and lengths:
        n = lengths.pop()
    elif n is not None and lengths and lengths != {n}:
        raise MetricError(f"states have {lengths.pop()} bits but n_qubits={n}")
    return _Sparse(probs, rest, n)


def _resolve_n(*items: _Sparse | int | None) -> int:
    ns = set()
    for it in items:
        n = it.n if isinstance(it, _Sparse) else it
        if n is not None:
            ns.add(n)
    if len(ns) != 1:
        raise MetricError(
            f"cannot tell the number of qubits (found {sorted(ns) or 'none'}); pass states of one "
            "bit length or a Distribution with n_qubits"
        )
    return ns.pop()


def _pairs(p: _Sparse, q: _Sparse, n: int) -> Iterable[tuple[float, float, float]]:
    """(p_i, q_i, multiplicity) covering all 2^n states: listed ones, then one block for the rest."""
    keys = p.probs.keys() | q.probs.keys()
    for k in keys:
        yield p.probs.get(k, p.rest), q.probs.get(k, q.rest), 1.0
    others = 2.0**n - len(keys)
    if others > 0:
        yield p.rest, q.rest, others


def mass(pred: Mapping[str, float], n_qubits: int | None = None) -> float:
    """Total predicted probability over all 2^n states."""
    p = _as_sparse(pred)
    n = _resolve_n(p, n_qubits)
    return sum(p.probs.values()) + p.rest * (2.0**n - len(p.probs))


def mass_error(pred: Mapping[str, float], n_qubits: int | None = None) -> float:
    """``|sum_i p_i - 1|`` over the full support."""
    return abs(mass(pred, n_qubits) - 1.0)


def grover_two_level(
    n_qubits: int, n_marked: int, iterations: int | None = None
) -> tuple[float, float]:
    """``(p_marked, p_other)``: probability of each marked and each unmarked state after k iterations.

    ``iterations=None`` uses the GroverGPT-2 rule ``k = floor(pi/4 sqrt(N/t))``.
    """
    N = 2**n_qubits
    t = n_marked
    if not 1 <= t <= N:
        raise MetricError(f"n_marked={t} must lie in [1, 2^{n_qubits}]")
    k = math.floor(math.pi / 4 * math.sqrt(N / t)) if iterations is None else iterations
    theta = math.asin(math.sqrt(t / N))
    p_total = math.sin((2 * k + 1) * theta) ** 2
    p_other = (1.0 - p_total) / (N - t) if t < N else 0.0
    return p_total / t, max(p_other, 0.0)


def true_distribution(problem: ProblemLike) -> Distribution:
    """The exact outcome distribution of a standard Grover problem in two-level form."""
    p_m, p_o = grover_two_level(problem.n_qubits, len(problem.marked), problem.iterations)
    return Distribution({s: p_m for s in problem.marked}, rest_each=p_o, n_qubits=problem.n_qubits)


def top_states(
    pred: Mapping[str, float], t: int, n_qubits: int | None = None, extra: Iterable[str] = ()
) -> list[tuple[str, float]]:
    """The t most probable states, ties broken by integer value (the anchors' rule).

    Unlisted states have probability ``rest_each``; those among ``extra`` (e.g. the marked states)
    are ranked by their own value, the others are the smallest unlisted integers.
    """
    p = _as_sparse(pred)
    n = _resolve_n(p, n_qubits)
    cands = dict(p.probs)
    for s in extra:
        cands.setdefault(s, p.rest)
    if p.rest > 0 or len(cands) < t:  # the first t unlisted integers can enter the top t
        i, added = 0, 0
        while added < t and i < 2**n:
            s = format(i, f"0{n}b")
            if s not in cands:
                cands[s] = p.rest
                added += 1
            i += 1
    ranked = sorted(cands.items(), key=lambda kv: (-kv[1], int(kv[0], 2)))
    return ranked[:t]


def search_accuracy(pred: Mapping[str, float], marked: Sequence[str], tau: float = 0.3) -> float:
    """Anchor SA@tau: of the top-t predicted states with ``p >= tau``, the share of the t marked."""
    marked_set = set(marked)
    top = top_states(pred, len(marked_set), _len_of(marked), extra=marked_set)
    return sum(1 for s, v in top if v >= tau and s in marked_set) / len(marked_set)


def marked_recall(pred: Mapping[str, float], marked: Sequence[str]) -> float:
    """Share of the t marked states that rank in the top t, ties counted against them.

    A marked state with probability v ranks in the top t when fewer than t states are ahead of it,
    counting every unmarked state with probability >= v (listed ones, and all ``2^n - listed``
    unlisted ones at ``rest_each``) and the marked states with a larger value. A prediction that
    ties a marked state with an unmarked one has not told them apart, so it does not earn the slot
    (``{}`` with ``rest_each = 0`` scores 0, not 1).
    """
    marked_set = set(marked)
    p = _as_sparse(pred)
    n = _resolve_n(p, _len_of(marked))
    t = len(marked_set)
    unmarked = sorted((v for s, v in p.probs.items() if s not in marked_set), reverse=True)
    unlisted = 2**n - len(p.probs.keys() | marked_set)  # unmarked states at rest_each
    values = sorted((p.probs.get(s, p.rest) for s in marked_set), reverse=True)
    hits = 0
    for i, v in enumerate(values):  # i marked states rank ahead of this one
        ahead = sum(1 for u in unmarked if u >= v) + (unlisted if p.rest >= v else 0)
        hits += i + ahead < t
    return hits / t


def set_accuracy(pred: Mapping[str, float], marked: Sequence[str]) -> float:
    """1.0 when the top-t predicted set is exactly the marked set, else 0.0 (valid for any t).

    Equivalent to: every marked state has a strictly larger probability than every unmarked one
    (ties count as a miss, see :func:`marked_recall`).
    """
    return 1.0 if marked_recall(pred, marked) == 1.0 else 0.0


def _len_of(marked: Sequence[str]) -> int:
    lengths = {len(s) for s in marked}
    if len(lengths) != 1:
        raise MetricError(f"marked states {list(marked)} must be non-empty and of one bit length")
    return lengths.pop()


def _bc(pred: Mapping[str, float], true: Mapping[str, float], renormalize: bool) -> float:
    """Bhattacharyya coefficient sum_i sqrt(p_i q_i) over all 2^n states."""
    p, q = _as_sparse(pred), _as_sparse(true)
    n = _resolve_n(p, q)
    scale = 1.0
    if renormalize:
        m = mass(pred, n)
        if m <= 0:
            return 0.0
        scale = 1.0 / m
    return sum(c * math.sqrt(max(a * scale, 0.0) * max(b, 0.0)) for a, b, c in _pairs(p, q, n))


def classical_fidelity(
    pred: Mapping[str, float], true: Mapping[str, float], renormalize: bool = False
) -> float:
    """``(sum_i sqrt(p_i q_i))^2``; raw (anchor, may exceed 1) or with pred renormalised to mass 1."""
    return _bc(pred, true, renormalize) ** 2


def hellinger(pred: Mapping[str, float], true: Mapping[str, float]) -> float:
    """Hellinger distance ``sqrt(1 - BC)`` with pred renormalised to mass 1; in [0, 1]."""
    return math.sqrt(max(0.0, 1.0 - _bc(pred, true, True)))


def total_variation(
    pred: Mapping[str, float], true: Mapping[str, float], renormalize: bool = False
) -> float:
    """``0.5 * sum_i |p_i - q_i|`` over all 2^n states (pred renormalised first if asked)."""
    p, q = _as_sparse(pred), _as_sparse(true)
    n = _resolve_n(p, q)
    scale = 1.0
    if renormalize:
        m = mass(pred, n)
        scale = 1.0 / m if m > 0 else 0.0
    return 0.5 * sum(c * abs(a * scale - b) for a, b, c in _pairs(p, q, n))


def marked_probability_error(pred: Mapping[str, float], problem: ProblemLike) -> float:
    """Mean over marked states of ``|p_pred(s) - p_true(s)|`` (unlisted states: ``rest_each``)."""
    p = _as_sparse(pred)
    p_m, _ = grover_two_level(problem.n_qubits, len(problem.marked), problem.iterations)
    errs = [abs(p.probs.get(s, p.rest) - p_m) for s in problem.marked]
    return sum(errs) / len(errs)


def parse_rate(preds: Iterable[Any]) -> float:
    """Share of predictions whose ``ok`` is true."""
    flags = [bool(getattr(p, "ok", True)) for p in preds]
    return sum(flags) / len(flags) if flags else float("nan")


def score(pred: Any, problem: ProblemLike) -> dict[str, float]:
    """Every metric of one prediction against the exact distribution of ``problem``.

    ``tvd`` and ``hellinger`` use the prediction renormalised to mass 1 (so they lie in [0, 1]; the mass
    is judged by ``mass_error``); ``tvd_raw`` is the unnormalised one (unbounded when mass > 1).
    A prediction that did not parse (``pred.ok`` false) or lists states of the wrong bit length
    scores the worst value of each metric (0 accuracy, named set and fidelity, TVD = Hellinger = 1,
    p_marked_err = mass_error = 1), so parse failures cannot improve an average.
    """
    n = problem.n_qubits
    ok = bool(getattr(pred, "ok", True))
    if ok:
        lengths = {len(k) for k in pred}
        ok = lengths == {n} or (not lengths and getattr(pred, "n_qubits", None) == n)
    if not ok:
        return {
            "sa_0.3": 0.0,
            "set_acc": 0.0,
            "named_set": 0.0,
            "marked_recall": 0.0,
            "cf_raw": 0.0,
            "cf_renorm": 0.0,
            "tvd": 1.0,
            "tvd_raw": 1.0,
            "hellinger": 1.0,
            "p_marked_err": 1.0,
            "mass_error": 1.0,
            "parsed": 0.0,
        }
    dist = Distribution(dict(pred.items()), float(getattr(pred, "rest_each", 0.0) or 0.0), n)
    true = true_distribution(problem)
    marked = list(problem.marked)
    return {
        "sa_0.3": search_accuracy(dist, marked, 0.3),
        "set_acc": set_accuracy(dist, marked),
        "named_set": float(set(dist.probs) == set(marked)),
        "marked_recall": marked_recall(dist, marked),
        "cf_raw": classical_fidelity(dist, true),
        "cf_renorm": classical_fidelity(dist, true, renormalize=True),
        "tvd": total_variation(dist, true, renormalize=True),
        "tvd_raw": total_variation(dist, true),
        "hellinger": hellinger(dist, true),
        "p_marked_err": marked_probability_error(dist, problem),
        "mass_error": mass_error(dist, n),
        "parsed": 1.0,
    }
