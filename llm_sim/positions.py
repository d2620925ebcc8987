"""Position ids for the compact Grover task: sequential, none (NoPE) or coupled to the task.

A training sequence is ``<bos> HEADER FLIPS TAIL ANSWER``::

    HEADER  qubits 1 2 h repeat 5 0 oracle x_mcz_x
    FLIPS   flip 0 1 1 ... flip 1 0 0 ...          (one block of n bits per marked state)
    TAIL    diffuse end measure
    ANSWER  marked 0 1 1 ... marked 1 0 0 ... p_marked 0 . 4 8 0 7 <eos>

Schemes (``PositionScheme.kind``):

- ``sequential``: 0, 1, 2, ... (what a causal LM does by default);
- ``nope``: every id 0, so RoPE rotates nothing and only the causal mask orders tokens (NoPE);
- ``coupled``: position coupling (Cho et al., NeurIPS 2024, arXiv 2405.20671). Each answer token
  of the copy part *mirrors* a prompt token (``marked`` its ``flip``, each bit its source bit); the
  rest of the answer (``p_marked``, the number, ``<eos>``) continues after ``measure``. The input
  token that predicts answer token j carries the id of the prompt token answer token j mirrors,
  so the model finds what to write at relative distance 0, whatever n and t are.

Two randomisations make relative distances uninformative in training, so that the model cannot
count bits instead of reading the coupled token (both only when ``rng`` is given, i.e. training):

- ``gap``: a random jump of U{0..gap} ids between HEADER and FLIPS (the header's length, which
  grows with the digits of n and k, stops mattering; Ruoss et al. 2023 randomise positions too);
- ``stride``: each training sequence draws its own largest step s ~ U{1..stride}, then consecutive
  ids in FLIPS and TAIL differ by U{1..s} instead of 1 (in ``compact_scaled`` prompts the register
  ``repeat | F <point> I measure`` and the answer's number keep steps of 1, so the number reads the
  register's window at fixed relative distances; the register's low bits, present only from
  n = 7, take the ids after the header, so the neighbourhood of the copy's end and of the number is
  the same at every n: at n = 16, numbered in the tail, those bits next to ``measure`` made a small
  model write ``marked`` again and again instead of ending the copy). A flip section of the 84 tokens training
  has at most then spans anything from 84 to ~2,700 ids, so the span of a 366-token section at
  n = 60 (t = 6) with small steps lies inside what training covered, and both dense and sparse ids
  occur. (Steps of U{1..4} in every sequence, tried first, cover spans up to ~210 ids only:
  copying broke down past n ~ 20.)

Evaluation puts the flips at the middle of the training gap range (a jump of gap // 2) and uses
steps U{1..eval_stride} from a fixed seed (``EVAL_SEED``), the same for every problem, so
evaluation is deterministic. (A jump of 0, used before, is the edge of the training range: the
copy slots then sit next to the header's digits, and one seed in three copied digits into the
bit strings at unseen n — named set 0.41 on its failing n at jump 0, 0.94-0.98 at 256 or 512.)

The answer layout (``copy_len`` tokens that mirror FLIPS, then the rest) is a function of the
prompt alone, so the ids of every answer slot are known before generation starts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from qhybrid.errors import QHybridError

__all__ = ["EVAL_SEED", "KINDS", "PositionScheme", "PromptLayout", "position_ids", "prompt_layout"]

KINDS = ("coupled", "sequential", "nope")
EVAL_SEED = 20241009  # the strides of every evaluation sequence


@dataclass(frozen=True)
class PositionScheme:
    """How position ids are assigned (see the module docstring)."""

    kind: str = "coupled"  # "coupled", "sequential" or "nope"
    gap: int = 1024  # training: random id jump U{0..gap} between the header and the first flip
    # (evaluation: gap // 2, the middle of that range)
    stride: int = 32  # training: per sequence s ~ U{1..stride}, then id steps U{1..s} in FLIPS
    eval_stride: int = 2  # evaluation: id steps U{1..eval_stride} from a fixed seed

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QHybridError(f"positions.kind={self.kind!r} is not one of {KINDS}")
        if not isinstance(self.gap, int) or not 0 <= self.gap <= 100_000:
            raise QHybridError(f"positions.gap={self.gap!r} must be an int in [0, 100000]")
        for name in ("stride", "eval_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 64:
                raise QHybridError(f"positions.{name}={value!r} must be an int in [1, 64]")


@dataclass(frozen=True)
class PromptLayout:
    """Where the parts of a compact prompt sit (token indices, ``<bos>`` included)."""

    first_flip: int  # index of the first ``flip`` token (= header length)
    tail: int  # index of ``diffuse``
    length: int  # prompt tokens
    register: int | None = None  # ``compact_scaled``: index of ``repeat``; ids step by 1 from it
    low_bits: int = 0  # ``compact_scaled``: the register's low fraction bits after ``repeat``

    @property
    def copy_len(self) -> int:
        """Answer tokens that mirror FLIPS (``marked``/bits, one per flip-section token)."""
        return self.tail - self.first_flip


def prompt_layout(tokens: Sequence[str]) -> PromptLayout:
    """The layout of a tokenised compact prompt (``<bos>`` optional), or a clear error."""
    try:
        first, tail = tokens.index("flip"), tokens.index("diffuse")
    except ValueError:
        raise QHybridError(
            "coupled positions need a compact prompt ('... flip <bits> ... diffuse ... "
            "measure'); use positions.kind='sequential' for other prompt formats"
        ) from None
    if tokens[tail + 1 : tail + 2] != ["repeat"]:
        return PromptLayout(first, tail, len(tokens))
    try:
        low = tokens.index("|", tail + 2) - tail - 2
    except ValueError:
        raise QHybridError("a compact_scaled prompt needs '|' in its register") from None
    return PromptLayout(first, tail, len(tokens), tail + 1, low)


def position_ids(
    layout: PromptLayout | None,
    total: int,
    scheme: PositionScheme,
    rng: random.Random | None = None,
) -> list[int]:
    """Ids for ``total`` tokens: the prompt, then answer slots (input tokens of the answer).

    Args:
        layout: the prompt's layout (needed by ``coupled``; ``None`` for the other kinds).
        total: prompt length plus the number of answer tokens fed to the model.
        scheme: the scheme.
        rng: draws the gap and strides of a training sequence; ``None`` for evaluation.
    """
    if scheme.kind == "sequential":
        return list(range(total))
    if scheme.kind == "nope":
        return [0] * total
    if layout is None:
        raise QHybridError("coupled positions need the prompt layout")
    f0, lp = layout.first_flip, layout.length
    draw = rng if rng is not None else random.Random(EVAL_SEED)
    gap = rng.randint(0, scheme.gap) if rng is not None else scheme.gap // 2
    # training: each sequence draws its own largest step, so both dense and sparse ids occur
    stride = rng.randint(1, scheme.stride) if rng is not None else scheme.eval_stride
    # the register's low bits (n >= 7 only) are numbered after the header, so the ids around the
    # end of the copy and the number are the same as at n <= 6
    ids = [0] * lp
    ids[:f0] = range(f0)
    low = (
        range(layout.register + 1, layout.register + 1 + layout.low_bits) if layout.register else ()
    )
    for j, i in enumerate(low):
        ids[i] = f0 + j
    at = f0 + len(low) + gap
    exact = layout.register if layout.register is not None else lp
    for i in (i for i in range(f0, lp) if i not in low):
        ids[i] = at
        at += 1 if i + 1 >= exact else draw.randint(1, stride)
    # mirrors[j]: the id answer token j mirrors (copy part: the flip section; then onwards)
    mirrors = ids[f0 : layout.tail]
    slots = total - lp
    mirrors += range(at, at + max(0, slots + 1 - len(mirrors)))
    return ids + mirrors[1 : slots + 1]  # input token j carries the id of answer token j + 1
