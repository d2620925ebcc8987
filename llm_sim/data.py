"""Task formats: problem → (prompt, answer) text, tokenised with the loss on answer tokens only.

Formats (``fmt``):

- ``"bits"`` (ours, built for qubit extrapolation): the circuit as one character per qubit and oracle
  block, ``G k=3 o=xccxc,cxcxx >``: for each X-MCZ-X block (sorted), qubit n-1 first as Qiskit prints,
  ``x`` where the block conjugates the control with X (the marked bit is 0) and ``c`` where it does
  not (bit 1). No qubit-index tokens, so nothing in the vocabulary is unseen at n = 20; reading the
  marked states is a per-position transliteration. Character tokenizer (:func:`char_tokenizer`).
- ``"compact"``: ``quantum.render(problem, "compact")`` with the quantum-native tokenizer
  (``quantum.build_tokenizer``).
- ``"qasm3"``: the anchor's full QASM3 text (``quantum.render(problem, "qasm3")``), for fine-tuning a
  pretrained LM with its own tokenizer.

Answers (``answer``):

- ``"closed"``: ``marked=01101,10010 p_each=0.48066 rest_each=0.0012894``, exact for any n;
- ``"dict"``: the anchor's ``{'0110': 0.9613, ...}`` over all 2^n states (small n only);
- ``"cot"``: a GroverGPT-2-style chain of thought (oracle blocks → state construction → marked
  states) ending in the closed form.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm_sim.metrics import grover_two_level
from llm_sim.parse import format_closed_form
from qhybrid.errors import QHybridError

__all__ = [
    "CHAR_VOCAB",
    "Problem",
    "SplitSpec",
    "TaskFormat",
    "answer_text",
    "char_tokenizer",
    "collate",
    "encode_example",
    "make_splits",
    "prompt_text",
]

# Printable ASCII and newline: every character of the "bits" prompts and of all answer formats.
CHAR_VOCAB = tuple(chr(i) for i in range(32, 127)) + ("\n",)
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")


class DataError(QHybridError):
    """A task format or split spec that cannot be built."""


@dataclass(frozen=True)
class Problem:
    """A standard Grover problem (duck-types ``quantum.GroverProblem``'s fields)."""

    n_qubits: int
    marked: tuple[str, ...]
    iterations: int | None = None

    @property
    def k(self) -> int:
        if self.iterations is not None:
            return self.iterations
        return math.floor(math.pi / 4 * math.sqrt(2**self.n_qubits / len(self.marked)))


def iterations_of(problem: Any) -> int:
    it = getattr(problem, "iterations", None)
    if it is not None:
        return int(it)
    return math.floor(math.pi / 4 * math.sqrt(2**problem.n_qubits / len(problem.marked)))


@dataclass(frozen=True)
class TaskFormat:
    fmt: str = "compact"  # prompt: "compact" (quantum-native tokens) | "bits" | "qasm3"
    answer: str = "closed"  # target: "closed" | "dict" | "cot"
    digits: int = 5  # significant digits of the probabilities in closed-form answers

    def __post_init__(self) -> None:
        if self.fmt not in ("bits", "compact", "qasm3"):
            raise DataError(
                f"fmt={self.fmt!r} is not a prompt format; use 'bits', 'compact' or 'qasm3'"
            )
        if self.answer not in ("closed", "dict", "cot"):
            raise DataError(
                f"answer={self.answer!r} is not an answer format; use 'closed', 'dict' or 'cot'"
            )


def _oracle_row(state: str) -> str:
    return "".join("c" if b == "1" else "x" for b in state)


def prompt_text(problem: Any, fmt: str = "compact") -> str:
    """The model's input for ``problem`` (ends with the separator the answer follows)."""
    if fmt == "bits":
        rows = ",".join(_oracle_row(s) for s in sorted(problem.marked))
        return f"G k={iterations_of(problem)} o={rows} >"
    from quantum import render  # the quantum part renders circuits

    if fmt == "compact":  # ends with "measure"; the answer starts with its own keyword
        return render(_as_grover(problem), "compact")
    return render(_as_grover(problem), fmt) + "\n>"


def _as_grover(problem: Any) -> Any:
    if type(problem).__name__ == "GroverProblem":
        return problem
    from quantum import GroverProblem

    return GroverProblem(problem.n_qubits, list(problem.marked), iterations=iterations_of(problem))


def answer_text(problem: Any, answer: str = "closed", digits: int = 5, fmt: str = "bits") -> str:
    """The target text for ``problem`` (without end-of-sequence).

    With the ``compact`` prompt the closed form is quantum's ``render(problem, "answer")``
    (``marked 0 1 1 marked ... p_marked 4 . 8 0 6 6 e - 0 1 p_rest ...``), whose every token is in
    the quantum-native vocabulary.
    """
    n, marked = problem.n_qubits, sorted(problem.marked)
    if fmt == "compact":
        if answer != "closed":
            raise DataError(
                f"the compact prompt's vocabulary has closed-form answers only, not {answer!r}"
            )
        from quantum import render

        return " " + render(_as_grover(problem), "answer")
    p_m, p_o = grover_two_level(n, len(marked), iterations_of(problem))
    closed = format_closed_form(marked, p_m, p_o, digits)
    if answer == "closed":
        return " " + closed
    if answer == "dict":
        if n > 6:
            raise DataError(
                f"dict answers list all 2^n states; n_qubits={n} > 6 is too long, use 'closed'"
            )
        ms = set(marked)
        items = [
            f"'{s}': {(p_m if s in ms else p_o):.4g}"
            for s in (format(i, f"0{n}b") for i in range(2**n))
        ]
        return " {" + ", ".join(items) + "}"
    lines = [" === Analysis ==="]
    for i, s in enumerate(marked):
        lines.append(f"=== Block {i} === {_oracle_row(s)} : {s}")
    lines.append("=== Final Marked States === " + ",".join(marked))
    lines.append(f"=== Simulation Results === {closed}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Tokenizer


def char_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast`` for the "bits" format (saves with save_pretrained)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for ch in CHAR_VOCAB:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def load_tokenizer(fmt: str) -> Any:
    """The tokenizer a from-scratch model uses for prompt format ``fmt``."""
    if fmt == "bits":
        return char_tokenizer()
    from quantum import build_tokenizer

    return build_tokenizer()


def encode_example(problem: Any, tokenizer: Any, task: TaskFormat) -> dict[str, list[int]]:
    """``input_ids`` = bos + prompt + answer + eos; ``labels`` = -100 on bos and prompt (answer-only loss)."""
    prompt = tokenizer.encode(prompt_text(problem, task.fmt), add_special_tokens=False)
    answer = tokenizer.encode(
        answer_text(problem, task.answer, task.digits, task.fmt), add_special_tokens=False
    )
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = bos + prompt + answer + [tokenizer.eos_token_id]
    labels = [-100] * (len(bos) + len(prompt)) + answer + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": labels}


def encode_prompt(problem: Any, tokenizer: Any, task: TaskFormat) -> list[int]:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer.encode(prompt_text(problem, task.fmt), add_special_tokens=False)


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and loss."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e["input_ids"])
        ids[i, :L] = torch.tensor(e["input_ids"])
        labels[i, :L] = torch.tensor(e["labels"])
        mask[i, :L] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def length_batches(
    examples: Sequence[dict[str, list[int]]], batch_size: int, pad_id: int, *, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Batches of similar length (less padding), in a seeded random order; a re-iterable epoch."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(chunks)
    return [collate([examples[i] for i in c], pad_id) for c in chunks]


# ----------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class SplitSpec:
    """Problems per split, disjoint on (n, marked set); test marked sets are unseen in training."""

    train_n: tuple[int, ...] = (3, 4, 5, 6)  # qubit counts in train and test_id
    t_range: tuple[int, int] = (1, 3)  # marked states per problem in train and test_id
    train_size: int = 4000  # training problems (optimal k, plus non-optimal k share below)
    nonoptimal_share: float = 0.3  # share of training problems with k in {0, k*/2, k*+1, 2k*}
    test_size: int = 100  # problems per test split
    ood_n: tuple[int, ...] = (7, 8, 10, 12, 16, 20)  # qubit counts of test_ood_n
    ood_t: tuple[int, int] = (4, 6)  # marked-state counts of test_ood_t
    seed: int = 0


def _random_marked(rng: random.Random, n: int, t: int) -> tuple[str, ...]:
    states: set[str] = set()
    while len(states) < t:
        states.add(format(rng.getrandbits(n), f"0{n}b"))
    return tuple(sorted(states))


def _k_star(n: int, t: int) -> int:
    return math.floor(math.pi / 4 * math.sqrt(2**n / t))


def nonoptimal_ks(n: int, t: int) -> list[int]:
    ks = _k_star(n, t)
    return sorted({0, ks // 2, ks + 1, 2 * ks} - {ks})


def make_splits(spec: SplitSpec) -> dict[str, list[Problem]]:
    """Seeded splits ``train``, ``test_id``, ``test_ood_n``, ``test_ood_t``, ``test_ood_k``.

    ``test_id`` and ``test_ood_k`` draw marked sets not used in training (at n=3 only a few sets
    exist, so the test draws them first and training skips them).
    """
    rng = random.Random(spec.seed)
    used: set[tuple[int, tuple[str, ...]]] = set()
    taken: dict[tuple[int, int], int] = {}

    def draw(n: int, t: int) -> tuple[str, ...] | None:
        """An unused marked set; at most half of the (n, t) pool goes to tests, the rest to training."""
        if taken.get((n, t), 0) >= math.comb(2**n, t) // 2:
            return None
        for _ in range(1000):
            m = _random_marked(rng, n, t)
            if (n, m) not in used:
                used.add((n, m))
                taken[(n, t)] = taken.get((n, t), 0) + 1
                return m
        return None

    def test_split(
        ns: Sequence[int], t_lo: int, t_hi: int, size: int, nonoptimal: bool
    ) -> list[Problem]:
        out: list[Problem] = []
        for _ in range(size * 50):
            if len(out) == size:
                break
            n = ns[len(out) % len(ns)] if len(ns) > 1 and not nonoptimal else rng.choice(ns)
            if t_lo > min(t_hi, 2 ** (n - 1) - 1):  # n too small for this many marked states
                continue
            t = rng.randint(t_lo, min(t_hi, 2 ** (n - 1) - 1))
            m = draw(n, t)
            if m is not None:
                k = rng.choice(nonoptimal_ks(n, t)) if nonoptimal else None
                out.append(Problem(n, m, k))
        return out

    lo, hi = spec.t_range
    splits: dict[str, list[Problem]] = {}
    splits["test_id"] = test_split(spec.train_n, lo, hi, spec.test_size, False)
    splits["test_ood_k"] = test_split(spec.train_n, lo, hi, spec.test_size, True)
    splits["test_ood_t"] = test_split(
        spec.train_n[1:] or spec.train_n, *spec.ood_t, spec.test_size, False
    )
    per_n = max(1, spec.test_size // max(1, len(spec.ood_n)))
    splits["test_ood_n"] = test_split(spec.ood_n, lo, hi, per_n * len(spec.ood_n), False)
    train = []
    for _ in range(spec.train_size):
        n = rng.choice(spec.train_n)
        t = rng.randint(lo, min(hi, 2 ** (n - 1) - 1))
        m = _random_marked(rng, n, t)
        if (n, m) in used:
            continue
        k = rng.choice(nonoptimal_ks(n, t)) if rng.random() < spec.nonoptimal_share else None
        train.append(Problem(n, m, k))
    splits["train"] = train
    return splits


def k_regime(problem: Any) -> str:
    """``optimal`` when k = k*, else ``k=0``, ``under`` or ``over``."""
    k, ks = iterations_of(problem), _k_star(problem.n_qubits, len(problem.marked))
    if k == ks:
        return "optimal"
    if k == 0:
        return "k=0"
    return "under" if k < ks else "over"


def problems_from_jsonl(paths: Iterable[Any]) -> list[Problem]:
    """Distinct problems of ``quantum.generate_dataset`` shard files (one record per rendering)."""
    import json
    from pathlib import Path

    out: dict[Problem, None] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "marked" not in r or "n_qubits" not in r:
                raise DataError(f"{path}: a record without n_qubits/marked: keys {sorted(r)}")
            out.setdefault(
                Problem(int(r["n_qubits"]), tuple(sorted(r["marked"])), r.get("iterations"))
            )
    return list(out)


def load_dataset_splits(root: Any) -> dict[str, list[Problem]]:
    """Problems per split of a ``qhybrid grover generate`` folder (``data/<split>/shard-*.jsonl``)."""
    from pathlib import Path

    root = Path(root)
    dirs = (
        sorted(d for d in (root / "data").glob("*") if d.is_dir())
        if (root / "data").is_dir()
        else []
    )
    splits = {d.name: problems_from_jsonl(sorted(d.glob("shard-*.jsonl"))) for d in dirs}
    if "train" not in splits:
        raise DataError(
            f"dataset={str(root)!r} has no data/train/shard-*.jsonl; create it with "
            "'qhybrid grover generate --out DIR' or leave dataset empty for the built-in splits"
        )
    return splits


def encode_all(
    problems: Iterable[Any], tokenizer: Any, task: TaskFormat
) -> list[dict[str, list[int]]]:
    return [encode_example(p, tokenizer, task) for p in problems]
