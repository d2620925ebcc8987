"""Task formats: a Grover problem as (prompt, answer) tokens, position ids, and training batches.

Prompts (``TaskFormat.fmt``), both read by the quantum-native tokenizer (``quantum.build_tokenizer``):

- ``"compact"`` (default): ``quantum.render(problem, "compact")``, e.g.
  ``qubits 5 h repeat 3 oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse end measure``;
- ``"compact_scaled"``: ``quantum.render(problem, "compact_scaled")``, n and k in binary with k written
  as the fixed-point number k / 2^ceil(n/2) (the scale of Grover's rotation), e.g.
  ``qubits 1 0 1 h oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse repeat | 1 1 0 : 0 0 measure``:
  the register's last six tokens mean the same rotation at every n >= 5, so the number can be
  computed at an n never seen (see ``docs/llm_sim.md``);
- ``"qasm3"``: the anchor's full OpenQASM 3 export (GroverGPT-2's input), for fine-tuning a
  pretrained LM with its own tokenizer.

Answers (``TaskFormat.answer``):

- ``"marked_p"`` (default): the marked states, then the probability of each, with ``digits``
  decimals: ``marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked 0 . 4 8 0 7``. The two-level answer has
  one free number: the other 2^n - t states share the rest, p_rest = (1 - t p_marked) / (2^n - t),
  which :func:`~llm_sim.parse.parse_answer` fills in. Fixed-point digits keep their significance at
  every n; a scientific exponent (and p_rest, a cancellation far below anything seen at n <= 6)
  would not.
- ``"marked_phase"``: the marked states, then the rotation as a chain-of-thought step, then the
  success probability P = t p_marked: ``marked 0 1 1 0 1 marked 1 0 0 1 0 phase 0 . 4 8 2
  p_success 0 . 9 4 5 3``. The phase frac((2k+1) theta / pi) (:func:`phase_text`) is close to
  linear in the ``compact_scaled`` register's window for a given t, and P = sin^2(pi phase) is one
  function shared by every n and t, so each step is a simpler map than window -> P; the parser
  reads only P (each marked state P / t, the others (1 - P) / (N - t)), never the phase.
- ``"closed"``: ``quantum.render(problem, "answer")``, both numbers in scientific notation
  (``... p_marked 4 . 8 0 6 6 e - 0 1 p_rest 1 . 2 8 9 4 e - 0 3``), the earlier default;
- ``"dict"``: ``{'000': 0.007813, ..., '101': 0.9453, ...}`` over all 2^n states (n <= 6);
- ``"anchor"``: GroverGPT-2's chain of thought (oracle blocks, marked states, truncated dict),
  byte for byte as its generator writes it (:func:`llm_sim.anchor.anchor_reasoning`).

The loss covers answer tokens only (prompt labels are -100). Position ids follow
``TaskFormat.positions`` (:mod:`llm_sim.positions`); :class:`Batches` draws a training sequence's
random gap and strides afresh every epoch from ``(seed, epoch)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_sim.positions import PositionScheme, PromptLayout, position_ids, prompt_layout
from qhybrid.errors import QHybridError

__all__ = [
    "ANSWERS",
    "PROMPTS",
    "Batches",
    "Example",
    "TaskFormat",
    "answer_text",
    "collate",
    "encode_example",
    "encode_prompt",
    "k_regime",
    "prompt_text",
]

PROMPTS = ("compact", "compact_scaled", "qasm3")
_COMPACT_PROMPTS = ("compact", "compact_scaled")
ANSWERS = ("marked_p", "marked_phase", "closed", "dict", "anchor")
_COPY_ANSWERS = ("marked_p", "marked_phase", "closed")  # answers that start with the flip blocks


class DataError(QHybridError):
    """A task format or a problem that cannot be encoded."""


@dataclass(frozen=True)
class TaskFormat:
    fmt: str = (
        "compact_scaled"  # prompt: "compact_scaled" (k on the sqrt(N) scale), "compact", "qasm3"
    )
    answer: str = "marked_phase"  # "marked_phase", "marked_p", "closed", "dict" or "anchor"
    digits: int = 4  # decimals of p_marked ("marked_p") or p_success ("marked_phase")
    positions: PositionScheme = field(default_factory=PositionScheme)  # position ids

    def __post_init__(self) -> None:
        if self.fmt not in PROMPTS:
            raise DataError(f"fmt={self.fmt!r} is not a prompt format; use one of {PROMPTS}")
        if self.answer not in ANSWERS:
            raise DataError(f"answer={self.answer!r} is not an answer format; use one of {ANSWERS}")
        if not isinstance(self.digits, int) or not 1 <= self.digits <= 12:
            raise DataError(f"digits={self.digits!r} must be an int in [1, 12]")
        if self.positions.kind == "coupled" and (
            self.fmt not in _COMPACT_PROMPTS or self.answer not in _COPY_ANSWERS
        ):
            raise DataError(
                f"coupled positions mirror the compact prompt's flip blocks in the answer, so they "
                f"need fmt in {_COMPACT_PROMPTS} and answer in {_COPY_ANSWERS} (got "
                f"fmt={self.fmt!r}, answer={self.answer!r}); use positions.kind='sequential' "
                "otherwise"
            )
        if self.fmt in _COMPACT_PROMPTS and self.answer not in _COPY_ANSWERS:
            raise DataError(
                f"answer={self.answer!r} is written in words the compact vocabulary lacks; use "
                f"{_COPY_ANSWERS} with fmt='compact', or fmt='qasm3' with a pretrained tokenizer"
            )


def prompt_text(problem: Any, fmt: str = "compact") -> str:
    """The model's input for ``problem`` (a :class:`~quantum.GroverProblem`)."""
    from quantum import render

    if fmt in _COMPACT_PROMPTS:  # ends with "measure"; the answer starts with its own keyword
        return render(problem, fmt)
    return render(problem, "qasm3") + "\n>"


def answer_text(problem: Any, task: TaskFormat) -> str:
    """The target text for ``problem`` (without end-of-sequence), with a leading space."""
    from quantum import render
    from quantum.simulate import two_level

    if task.answer == "closed":
        return " " + render(problem, "answer")
    if task.answer == "anchor":
        from llm_sim.anchor import anchor_reasoning

        return " " + anchor_reasoning(problem)
    dist = two_level(problem)
    blocks = " ".join(f"marked {' '.join(s)}" for s in problem.marked)
    if task.answer == "marked_p":
        return f" {blocks} p_marked {' '.join(f'{dist.p_marked_each:.{task.digits}f}')}"
    if task.answer == "marked_phase":
        return f" {blocks} phase {' '.join(phase_text(problem))} p_success " + " ".join(
            f"{dist.success_probability:.{task.digits}f}"
        )
    if problem.n_qubits > 6:
        raise DataError(
            f"dict answers list all 2^n states; n_qubits={problem.n_qubits} > 6 is too long, use "
            "'marked_p'"
        )
    states = (format(i, f"0{problem.n_qubits}b") for i in range(2**problem.n_qubits))
    items = [f"'{s}': {dist.probability(s):.4g}" for s in states]
    return " {" + ", ".join(items) + "}"


def phase_text(problem: Any, decimals: int = 3) -> str:
    """The rotation in half-turns, frac((2k + 1) asin(sqrt(t/N)) / pi), truncated: ``0.482``.

    P = sin^2(pi * phase) is the success probability, so the phase is the one number the
    ``marked_phase`` answer derives P from; truncation (not rounding) keeps it below 1.
    """
    n, t, k = problem.n_qubits, problem.n_marked, problem.iterations
    turns = (2 * k + 1) * math.asin(math.sqrt(t / 2**n)) / math.pi
    scaled = math.floor((turns - math.floor(turns)) * 10**decimals)
    return f"0.{scaled:0{decimals}d}"


def k_regime(problem: Any) -> str:
    """``optimal`` when k = k*, else ``k=0``, ``under`` or ``over``."""
    k, ks = problem.iterations, problem.optimal_iterations
    if k == ks:
        return "optimal"
    if k == 0:
        return "k=0"
    return "under" if k < ks else "over"


# ----------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class Example:
    """One tokenised problem: ``<bos>`` prompt answer ``<eos>``, labels on the answer only."""

    input_ids: list[int]
    labels: list[int]
    layout: PromptLayout | None  # where the flip blocks sit (coupled positions only)


def _layout(ids: Sequence[int], tokenizer: Any, task: TaskFormat) -> PromptLayout | None:
    if task.positions.kind != "coupled":
        return None
    return prompt_layout(tokenizer.convert_ids_to_tokens(list(ids)))


def encode_prompt(problem: Any, tokenizer: Any, task: TaskFormat) -> Example:
    """``<bos>`` + prompt ids (what generation starts from), with the prompt's layout."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = bos + tokenizer.encode(prompt_text(problem, task.fmt), add_special_tokens=False)
    return Example(ids, [-100] * len(ids), _layout(ids, tokenizer, task))


def encode_example(problem: Any, tokenizer: Any, task: TaskFormat) -> Example:
    """``input_ids`` = bos + prompt + answer + eos; ``labels`` = -100 on bos and prompt."""
    prompt = encode_prompt(problem, tokenizer, task)
    answer = tokenizer.encode(answer_text(problem, task), add_special_tokens=False)
    answer += [tokenizer.eos_token_id]
    return Example(prompt.input_ids + answer, prompt.labels + answer, prompt.layout)


def collate(
    examples: Sequence[Example],
    pad_id: int,
    scheme: PositionScheme,
    rng: random.Random | None = None,
    *,
    pack: bool = False,
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and loss.

    Always returns ``attention_mask``: without it, transformers reads non-consecutive position ids
    as packed sequences and masks attention across every jump.

    With ``pack``, the examples share rows instead: first-fit decreasing into rows as wide as the
    longest example, each row with a block-diagonal causal mask (``attention_mask`` of shape
    ``(rows, 1, width, width)``, True = attend), so no token sees another example and the loss is
    over exactly the same answer tokens (an example's first label is -100, so no prediction crosses
    a boundary). The same batch in about half the tokens when lengths vary two-fold.
    """
    draws = [position_ids(e.layout, len(e.input_ids), scheme, rng) for e in examples]
    width = max(len(e.input_ids) for e in examples)
    rows = _pack(examples, width) if pack else [[i] for i in range(len(examples))]
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e, n = examples[i], len(examples[i].input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at : at + n] = torch.tensor(e.labels)
            pos[r, at : at + n] = torch.tensor(draws[i])
            segment[r, at : at + n] = i
            at += n
    mask: torch.Tensor = (segment >= 0).long()
    if pack:
        same = segment[:, :, None] == segment[:, None, :]
        mask = (same & (segment[:, :, None] >= 0) & torch.ones(width, width).tril().bool())[:, None]
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos}


def _pack(examples: Sequence[Example], width: int) -> list[list[int]]:
    """First-fit decreasing: rows of example indices whose lengths sum to at most ``width``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids)):
        n = len(examples[i].input_ids)
        r = next((r for r, free in enumerate(room) if free >= n), None)
        if r is None:
            rows.append([i])
            room.append(width - n)
        else:
            rows[r].append(i)
            room[r] -= n
    return rows


class Batches:
    """Training batches, reshuffled and re-randomised every epoch.

    Iterating yields one epoch of random batches (not length buckets: a batch of one (n, t) would
    pull the weights towards that case, and the loss curve zigzags); ``pack`` packs each batch's
    examples into fewer rows (same examples, same loss, about half the tokens; see :func:`collate`). The order and each sequence's
    position gap and strides are functions of ``(seed, epoch)``; :func:`qhybrid.train.train` calls
    :meth:`set_epoch`, so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        pad_id: int,
        scheme: PositionScheme,
        *,
        seed: int = 0,
        randomize: bool = True,
        pack: bool = False,
    ) -> None:
        if not examples:
            raise DataError("no training examples: the train split is empty")
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.scheme, self.seed, self.randomize, self.epoch = scheme, seed, randomize, 0
        self.pack = pack

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.examples)))
        if self.randomize:
            rng.shuffle(order)
        draw = rng if self.randomize else None
        for i in range(0, len(order), self.batch_size):
            chunk = [self.examples[j] for j in order[i : i + self.batch_size]]
            yield collate(chunk, self.pad_id, self.scheme, draw, pack=self.pack)
