"""Parse model output into a :class:`Prediction`; never raises on model output.

Two answer forms are understood:

- closed form (ours, exact for any n): ``marked=01101,10010 p_each=0.48066 rest_each=0.0012894``,
  or the token form ``marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked 0 . 4 8 0 7`` with an optional
  ``p_rest <number>``; without it every unlisted state gets (1 - t p_marked) / (2^n - t), the
  two-level form's normalisation; or ``marked ... phase 0 . 4 8 2 p_success 0 . 9 4 5 3``: the
  success probability P, each marked state P / t (the phase is the model's working, not read). Whitespace anywhere is ignored, so a tokenizer's ``decode`` that
  spaces its tokens still parses;
- a probability dict (GroverGPT-2, also the tail of its chain-of-thought text):
  ``{'0110': 0.9613, '0000': 0.0026}``; the last dict in the text is used, unlisted states get 0.

A text that fits neither comes back with ``ok=False`` and a short ``reason`` code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from llm_sim.metrics import Distribution

__all__ = ["Prediction", "format_closed_form", "parse_answer"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CLOSED = re.compile(
    rf"marked=(?P<marked>[01]+(?:,[01]+)*),?p_each=(?P<p>{_NUM})rest_each=(?P<rest>{_NUM})"
)
# marked 0 1 1 marked 1 0 0 p_marked 0 . 4 8 [p_rest 1 . 2 e - 0 3] (llm_sim's and quantum's answers)
_QANSWER = re.compile(
    rf"(?P<marked>(?:marked[01]+)+)p_marked(?P<p>{_NUM})(?:p_rest(?P<rest>{_NUM}))?"
)
# marked 0 1 1 marked 1 0 0 phase 0 . 4 8 2 p_success 0 . 9 4 5 3 (the phase is not read)
_PANSWER = re.compile(rf"(?P<marked>(?:marked[01]+)+)phase{_NUM}p_success(?P<total>{_NUM})")
_DICT = re.compile(r"\{[^{}]*\}")
_ENTRY = re.compile(rf"['\"]?\s*([01]+)\s*['\"]?\s*:\s*({_NUM})")


@dataclass(frozen=True)
class Prediction(Distribution):
    """A parsed answer: a :class:`~llm_sim.metrics.Distribution` plus whether and why it parsed."""

    ok: bool = True
    reason: str = ""  # "" when ok; else a stable code: empty, no_answer, bad_number, ...
    marked: tuple[str, ...] = ()  # the states the answer names as marked (closed form) or top ones


def _fail(reason: str) -> Prediction:
    return Prediction({}, 0.0, None, ok=False, reason=reason)


def format_closed_form(
    marked: list[str] | tuple[str, ...], p_each: float, rest_each: float, digits: int = 5
) -> str:
    """``marked=a,b p_each=x rest_each=y`` with sorted states and ``digits`` significant digits."""
    return (
        f"marked={','.join(sorted(marked))} p_each={p_each:.{digits}g} "
        f"rest_each={rest_each:.{digits}g}"
    )


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def parse_answer(text: object) -> Prediction:
    """Parse a model's answer text. Never raises; ``Prediction.ok``/``reason`` say what happened."""
    try:
        return _parse(text)
    except Exception as err:  # defensive: model output must never crash an evaluation
        return _fail(f"internal:{type(err).__name__}")


def _parse(text: object) -> Prediction:
    if not isinstance(text, str):
        return _fail("not_text")
    if not text.strip():
        return _fail("empty")
    squeezed = re.sub(r"\s+", "", text)
    m = _CLOSED.search(squeezed) or _QANSWER.search(squeezed) or _PANSWER.search(squeezed)
    if m:
        states = [s for s in re.split(r"marked|,", m.group("marked")) if s]
        if len({len(s) for s in states}) != 1:
            return _fail("inconsistent_bit_length")
        if len(set(states)) != len(states):
            return _fail("duplicate_state")
        n, t = len(states[0]), len(states)
        rest: float | None = None
        if "total" in m.re.groupindex:  # the success probability P: each marked state P / t
            total = _number(m.group("total"))
            p = total / t if total is not None and total <= 1 else total  # P > 1: refused below
        else:
            p = _number(m.group("p"))
        if m.groupdict().get("rest") is not None:
            rest = _number(m.group("rest"))
        elif p is not None:  # the two-level normalisation (every state listed: nothing left)
            rest = max(0.0, 1.0 - t * p) / (2.0**n - t) if 2**n > t else 0.0
        if p is None or rest is None:
            return _fail("bad_number")
        if p < 0 or rest < 0:
            return _fail("negative_probability")
        if p > 1 or rest > 1:
            return _fail("probability_above_one")
        return Prediction({s: p for s in states}, rest, n, ok=True, marked=tuple(sorted(states)))
    if "marked=" in squeezed or squeezed.startswith("marked"):
        return _fail("truncated_closed_form")
    dicts = _DICT.findall(text)
    if not dicts:
        return _fail("no_answer")
    entries = _ENTRY.findall(dicts[-1])
    if not entries:
        return _fail("empty_dict")
    probs: dict[str, float] = {}
    for state, num in entries:
        v = _number(num)
        if v is None:
            return _fail("bad_number")
        if v < 0:
            return _fail("negative_probability")
        if v > 1:
            return _fail("probability_above_one")
        if state in probs:
            return _fail("duplicate_state")
        probs[state] = v
    lengths = {len(s) for s in probs}
    if len(lengths) != 1:
        return _fail("inconsistent_bit_length")
    top = sorted(probs, key=lambda s: (-probs[s], int(s, 2)))
    return Prediction(probs, 0.0, lengths.pop(), ok=True, marked=tuple(top))
