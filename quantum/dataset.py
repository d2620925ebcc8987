"""Grover datasets: problems sampled from one master seed, key-disjoint splits, JSONL + Parquet.

Splits (all disjoint on the marked set (n, sorted marked states), hence also on
:attr:`~quantum.problem.GroverProblem.key`; test splits are drawn first, so train never takes
their marked sets):

- ``train``: the training ranges of n and t; optimal k, plus a share of non-optimal k
  (``off_optimal``) so that a model can learn the k-dependence ``test_ood_k`` asks for;
- ``test_id``: the same ranges, marked sets unseen in training;
- ``test_ood_n``: more qubits;
- ``test_ood_t``: more marked states;
- ``test_ood_k``: the training ranges with a non-optimal k drawn from {0, k*//2, k*+1, 2k*} \\ {k*}
  (breaks the "copy the marked state with p ~ 1" shortcut).

Within a split, n is drawn uniformly, then t uniformly among the allowed pairs of that n, then a
uniform marked set, an oracle style from ``oracle_styles`` and k. A pair is allowed when Grover
search amplifies it, 2t < 2**n (at t = 2**n / 2 every state ends with the same probability, so no
answer can single out the marked set). A pair whose marked sets are used up (small n) is dropped
after 64 straight repeats. The test splits take at most half of the marked sets of any (n, t); the
training split may repeat one of its marked sets with another k or oracle style (a different
problem; no problem occurs twice), and first draws one problem for every (n, t) of ``test_id``, so
every pair tested in distribution is also trained on (at n = 2, t = 1 there are only four marked
sets, two of them for training).

Layout of ``out_dir``::

    spec.json                           the DatasetSpec (a rerun into the same folder must match)
    data/<split>/shard-00000.jsonl      records, one JSON object per line, sorted keys
    data/<split>/shard-00000.parquet    the same records (``datasets`` / Arrow)
    data/<split>/shard-00000.done.json  shard summary, written last: the shard is complete
    manifest.json                       per split and shard: records, sha256, n/t range, tokens
    provenance.json                     seed, spec, package versions, generator version
    README.md                           the dataset card (HF YAML header with the splits)

Record schema (one per problem x rendering) — see :data:`RECORD_FIELDS`.

Generation is atomic (every file via a temp file + rename) and resumable (a shard with its
``.done.json`` is skipped); output depends only on the spec, so a rerun with the same seed is
byte-identical (no timestamps, fixed key order, deterministic sampling and Aer seeds).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qhybrid.config import config_to_dict, from_dict
from qhybrid.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from quantum.circuits import MAX_DIAGONAL_QUBITS
from quantum.problem import (
    MAX_QUBITS,
    ORACLE_STYLES,
    GroverProblem,
    GroverProblemError,
    optimal_iterations,
)
from quantum.render import FORMATS, render
from quantum.simulate import MAX_AER_QUBITS, depolarizing_noise, simulate, two_level
from quantum.tokenizer import count_tokens

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_VERSION",
    "RECORD_FIELDS",
    "SPLITS",
    "DatasetInfo",
    "DatasetSpec",
    "SplitSpec",
    "check_output",
    "draw_splits",
    "generate_dataset",
    "off_optimal_iterations",
    "sample_split",
]

GENERATOR_VERSION = "qhybrid.quantum.dataset/2"
SPLITS = ("train", "test_id", "test_ood_n", "test_ood_t", "test_ood_k")
_DRAW_ORDER = ("test_id", "test_ood_n", "test_ood_t", "test_ood_k", "train")  # tests reserve first
BIT_ORDER = "qiskit: qubit 0 is the rightmost character; probs[i] is the outcome int(s, 2) == i"

RECORD_FIELDS: dict[str, str] = {
    "record_id": "sha256 of '<problem_id>:<rendering>' (hex)",
    "problem_id": "GroverProblem.key: sha256 of canonical JSON [n, sorted marked, k, style]",
    "split": "train | test_id | test_ood_n | test_ood_t | test_ood_k",
    "index": "position of the problem in its split (0-based)",
    "n_qubits": "n",
    "marked": "sorted marked bitstrings, qubit 0 rightmost (Qiskit counts order)",
    "n_marked": "t",
    "iterations": "k, Grover iterations in the circuit",
    "optimal_iterations": "floor(pi/4 sqrt(2**n / t))",
    "iteration_rule": "floor_pi4 | qiskit_algorithms | explicit",
    "oracle_style": "x_mcz_x | mcp_flag | phase_oracle | diagonal",
    "rendering": "compact | qasm3_loop | qasm3 | qasm3_oracle",
    "text": "the circuit rendered in that format (model input)",
    "n_chars": "len(text)",
    "n_tokens": "tokens of text under quantum.build_tokenizer() (no special tokens)",
    "target": "the exact answer in the 'answer' format (two-level closed form)",
    "target_n_tokens": "tokens of target",
    "p_marked_each": "exact probability of each marked state (float64)",
    "p_rest_each": "exact probability of each unmarked state (float64)",
    "success_probability": "t * p_marked_each",
    "probs": "dense exact distribution, length 2**n, for n <= dense_probs_max_n, else null",
    "aer_max_abs_diff": "max |Aer statevector - exact| over all 2**n outcomes, or null if unchecked",
    "probs_noisy": "Aer density-matrix distribution under depolarizing noise, or null",
    "seed": "per-problem seed: first 63 bits of sha256('<master seed>:<split>:<index>')",
    "generator": "generator version string",
}


K_DRAWS = ("anchor", "uniform", "both")  # how a split draws its off-optimal k (SplitSpec.k_draw)


@dataclass(frozen=True)
class SplitSpec:
    n_min: int  # smallest number of qubits
    n_max: int  # largest number of qubits (inclusive)
    t_min: int  # fewest marked states
    t_max: int  # most marked states (capped at 2**n - 1 per n)
    count: int  # problems in the split (records = count x renderings)
    off_optimal: float = 0.0  # share of problems with k from {0, k*//2, k*+1, 2k*} (else k*)
    k_draw: str = (
        "anchor"  # off-optimal k: "anchor" = the set above; "uniform" = U[0, 4 * 2**ceil(n/2))
    )

    def __post_init__(self) -> None:
        if not 1 <= self.n_min <= self.n_max <= MAX_QUBITS:
            raise GroverProblemError(
                f"split n range {self.n_min}..{self.n_max} must satisfy 1 <= n_min <= n_max <= "
                f"{MAX_QUBITS}"
            )
        if not 1 <= self.t_min <= self.t_max:
            raise GroverProblemError(
                f"split t range {self.t_min}..{self.t_max} must satisfy 1 <= t_min <= t_max"
            )
        if 2 * self.t_min >= 2**self.n_max:
            raise GroverProblemError(
                f"t_min={self.t_min} marked states need 2**n > 2 t_min (Grover amplifies only "
                f"t < 2**n / 2) but n_max={self.n_max}; raise n_max or lower t_min"
            )
        if self.count < 0:
            raise GroverProblemError(f"split count={self.count} must be >= 0")
        if not 0.0 <= self.off_optimal <= 1.0:  # also refuses NaN
            raise GroverProblemError(
                f"off_optimal={self.off_optimal} is a share of problems; use a value in [0, 1]"
            )
        if self.k_draw not in K_DRAWS:
            raise GroverProblemError(f"k_draw={self.k_draw!r} is not one of {K_DRAWS}")

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The (n, t) pairs this split draws from: its ranges, with 2t < 2**n."""
        return [
            (n, t)
            for n in range(self.n_min, self.n_max + 1)
            for t in range(self.t_min, self.t_max + 1)
            if 2 * t < 2**n
        ]

    @property
    def k_regime(self) -> str:
        """``optimal``, ``off_optimal`` or e.g. ``30% off_optimal``, for tables."""
        names = {0.0: "optimal", 1.0: "off_optimal"}
        return names.get(self.off_optimal, f"{self.off_optimal:.0%} off_optimal")


@dataclass(frozen=True)
class DatasetSpec:
    seed: int = 0  # master seed; every split, problem and Aer run derives its seed from it
    renderings: tuple[str, ...] = ("compact", "qasm3_loop")  # one record per problem x rendering
    oracle_styles: tuple[str, ...] = ("x_mcz_x",)  # each problem's oracle drawn from these
    train: SplitSpec = SplitSpec(2, 6, 1, 3, 2000, off_optimal=0.3)
    test_id: SplitSpec = SplitSpec(2, 6, 1, 3, 200)
    test_ood_n: SplitSpec = SplitSpec(7, 20, 1, 3, 280)
    test_ood_t: SplitSpec = SplitSpec(4, 8, 4, 6, 200)
    test_ood_k: SplitSpec = SplitSpec(2, 6, 1, 3, 200, off_optimal=1.0)
    dense_probs_max_n: int = 6  # records carry the dense distribution up to this n
    aer_check_max_n: int = 6  # Aer statevector cross-check of the target up to this n ...
    aer_check_per_split: int = 50  # ... for the first this-many problems of each split
    noise_depolarizing: float = 0.0  # > 0: add Aer noisy probs (1q error p, 2q error 10p) ...
    noise_max_n: int = 4  # ... for the Aer-checked problems up to this n (density matrices)
    shard_size: int = 5000  # problems per shard file
    workers: int = 1  # processes that render shards in parallel
    parquet: bool = True  # also write Parquet shards (needs the `datasets` package)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GroverProblemError(f"seed={self.seed!r} must be an int >= 0")
        for r in self.renderings:
            inputs = tuple(f for f in FORMATS if not f.startswith("answer"))
            if r not in inputs:
                raise GroverProblemError(f"unknown rendering {r!r}; use some of {inputs}")
        if not self.renderings:
            raise GroverProblemError("renderings is empty; give at least one, e.g. ['compact']")
        bad = [o for o in self.oracle_styles if o not in ORACLE_STYLES]
        if bad or not self.oracle_styles:
            raise GroverProblemError(
                f"oracle_styles={list(self.oracle_styles)}: unknown or none; use some of "
                f"{list(ORACLE_STYLES)}"
            )
        if self.shard_size < 1 or self.workers < 1:
            raise GroverProblemError(
                f"shard_size={self.shard_size} and workers={self.workers} must be >= 1"
            )
        if not 0.0 <= self.noise_depolarizing <= 0.1:
            raise GroverProblemError(
                f"noise_depolarizing={self.noise_depolarizing} must be in [0, 0.1] (the 2-qubit "
                "error is 10x it)"
            )
        circuits = [r for r in self.renderings if r != "compact"]
        big = [n for n in ("train", *SPLITS[1:]) if self.split(n).n_max > MAX_DIAGONAL_QUBITS]
        if "diagonal" in self.oracle_styles and circuits and big:
            raise GroverProblemError(
                f"oracle style 'diagonal' has no circuit beyond n = {MAX_DIAGONAL_QUBITS} (2**n "
                f"phases), but split(s) {big} reach further and renderings {circuits} need the "
                "circuit; render only 'compact' or drop 'diagonal' from oracle_styles"
            )
        if self.aer_check_max_n > MAX_AER_QUBITS:
            raise GroverProblemError(
                f"aer_check_max_n={self.aer_check_max_n} > {MAX_AER_QUBITS}; lower it"
            )

    def split(self, name: str) -> SplitSpec:
        spec: SplitSpec = getattr(self, name)
        return spec


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`generate_dataset` wrote."""

    out_dir: Path
    splits: dict[str, int]  # records per split
    problems: dict[str, int]  # problems per split
    files: list[Path] = field(default_factory=list)  # JSONL and Parquet shards
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.splits.values())


# ---------------------------------------------------------------- sampling


def draw_iterations(n_qubits: int, n_marked: int, how: str, rng: np.random.Generator) -> int:
    """A non-optimal k: from :func:`off_optimal_iterations` (``"anchor"``), or uniform over
    [0, 2 * 2**ceil(n/2)) (``"uniform"``: x = k / 2**ceil(n/2) < 2 in the ``compact_scaled``
    register, past 2 k* + 1 at every n and t), which may also hit k*; ``"both"``: either, with
    probability 1/2 each."""
    if how == "both":
        how = "uniform" if rng.random() < 0.5 else "anchor"
    if how == "uniform":
        return int(rng.integers(0, 2 * 2 ** ((n_qubits + 1) // 2)))
    choices = off_optimal_iterations(n_qubits, n_marked)
    return choices[int(rng.integers(len(choices)))]


def off_optimal_iterations(n_qubits: int, n_marked: int) -> list[int]:
    """The non-optimal iteration counts of ``test_ood_k``: {0, k*//2, k*+1, 2k*} without k*."""
    k_star = optimal_iterations(n_qubits, n_marked)
    return sorted({0, k_star // 2, k_star + 1, 2 * k_star} - {k_star})


def _draw_marked(n: int, t: int, rng: np.random.Generator) -> tuple[int, ...]:
    size = 2**n
    if 4 * t > size:  # dense draw: a permutation prefix
        return tuple(sorted(int(i) for i in rng.choice(size, t, replace=False)))
    while True:  # t <= 2**n / 4: redraw on a collision (cheaper than choice's permutation)
        draw = {int(i) for i in rng.integers(0, size, size=t, dtype=np.int64)}
        if len(draw) == t:
            return tuple(sorted(draw))


# (n, sorted marked bitstrings, k or None = optimal, oracle style)
Drawn = tuple[int, list[str], int | None, str]


def sample_split(
    spec: SplitSpec,
    seed: int,
    split_index: int,
    used: set[tuple[int, ...]],
    *,
    styles: Sequence[str] = ("x_mcz_x",),
    cap: dict[tuple[int, int], int] | None = None,
    first: Sequence[tuple[int, int]] = (),
    reuse: bool = False,
) -> list[Drawn]:
    """Draw ``spec.count`` problems whose marked sets are not in ``used``.

    n is drawn uniformly, then t uniformly among the allowed pairs of that n, then a marked set,
    the oracle style and k. ``used`` holds (n, *marked indices) tuples; the marked sets drawn here
    join it unless ``reuse`` (the training split: a set may come back with another k or oracle
    style, a different problem, never the same one twice). ``cap`` (updated in place) bounds the
    marked sets taken per (n, t) (the test splits share half of each pool); the pairs in ``first``
    get one problem each before the random draw. The draw depends only on the arguments, so the
    whole dataset is a function of the spec.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index,)))
    pairs = spec.pairs
    todo = [p for p in dict.fromkeys(first) if p in pairs]
    misses = dict.fromkeys(pairs, 0)
    seen: set[tuple[Any, ...]] = set()  # (n, *marked, k, style) of the problems drawn here
    out: list[Drawn] = []
    while len(out) < spec.count and pairs:
        if todo:
            pair = todo[0]
        else:
            ns = sorted({n for n, _ in pairs})
            n = ns[int(rng.integers(len(ns)))]
            ts = [t for m, t in pairs if m == n]
            pair = (n, ts[int(rng.integers(len(ts)))])
        n, t = pair
        full = cap is not None and cap.get(pair, 0) >= math.comb(2**n, t) // 2
        marked = () if full else _draw_marked(n, t, rng)
        style = styles[int(rng.integers(len(styles)))] if len(styles) > 1 else styles[0]
        k = None
        if spec.off_optimal and rng.random() < spec.off_optimal:
            k = draw_iterations(n, t, spec.k_draw, rng)
        key = (n, *marked, k, style)
        if full or (n, *marked) in used or key in seen:
            misses[pair] += 1
            if full or misses[pair] >= 64:  # this (n, t) is (nearly) used up
                pairs.remove(pair)
                todo = [p for p in todo if p != pair]
            continue
        todo = [p for p in todo if p != pair]
        misses[pair] = 0
        seen.add(key)
        if not reuse:
            used.add((n, *marked))
        if cap is not None:
            cap[pair] = cap.get(pair, 0) + 1
        out.append((n, [format(i, f"0{n}b") for i in marked], k, style))
    if len(out) < spec.count:
        logger.warning(
            "split %d: only %d of %d problems have unused marked sets in n=%d..%d, t=%d..%d",
            split_index,
            len(out),
            spec.count,
            spec.n_min,
            spec.n_max,
            spec.t_min,
            spec.t_max,
        )
    return out


@functools.lru_cache(maxsize=2)
def _draw(spec: DatasetSpec) -> dict[str, list[Drawn]]:
    """Every split's problems: the test splits first (half of each (n, t) pool at most), then
    ``train``, which starts with one problem per (n, t) of ``test_id``.

    Cached (callers only read it): ``qhybrid grover generate`` checks a spec before its run folder
    exists and then generates from the same spec, which draws once."""
    used: set[tuple[int, ...]] = set()
    cap: dict[tuple[int, int], int] = {}
    drawn = {
        name: sample_split(
            spec.split(name),
            spec.seed,
            SPLITS.index(name),
            used,
            styles=spec.oracle_styles,
            cap=cap,
        )
        for name in _DRAW_ORDER
        if name != "train"
    }
    tested = sorted({(n, len(m)) for n, m, _, _ in drawn["test_id"]})
    drawn["train"] = sample_split(
        spec.train,
        spec.seed,
        SPLITS.index("train"),
        used,
        styles=spec.oracle_styles,
        first=tested,
        reuse=True,
    )
    missing = sorted(set(tested) - {(n, len(m)) for n, m, _, _ in drawn["train"]})
    if missing:
        raise GroverProblemError(
            f"train does not cover the (n, t) pairs {missing} of test_id, so test_id would not be "
            "in distribution; widen train's n/t ranges or raise train.count"
        )
    return drawn


def draw_splits(spec: DatasetSpec) -> dict[str, list[GroverProblem]]:
    """The problems of every split of ``spec``, in memory (what :func:`generate_dataset` writes).

    >>> splits = draw_splits(DatasetSpec(seed=1))
    >>> sorted(splits), len(splits["train"])
    (['test_id', 'test_ood_k', 'test_ood_n', 'test_ood_t', 'train'], 2000)
    """
    return {
        name: [GroverProblem(n, m, k, style) for n, m, k, style in items]
        for name, items in _draw(spec).items()
    }


def problem_seed(seed: int, split: str, index: int) -> int:
    """The per-problem seed: the first 63 bits of sha256("<seed>:<split>:<index>").

    (A hash rather than ``SeedSequence.spawn``: ~100x cheaper per record, equally stable.)
    """
    digest = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------- records


def _features() -> Any:
    from datasets import Features, List, Value

    types = {
        "record_id": Value("string"),
        "problem_id": Value("string"),
        "split": Value("string"),
        "index": Value("int64"),
        "n_qubits": Value("int64"),
        "marked": List(Value("string")),
        "n_marked": Value("int64"),
        "iterations": Value("int64"),
        "optimal_iterations": Value("int64"),
        "iteration_rule": Value("string"),
        "oracle_style": Value("string"),
        "rendering": Value("string"),
        "text": Value("string"),
        "n_chars": Value("int64"),
        "n_tokens": Value("int64"),
        "target": Value("string"),
        "target_n_tokens": Value("int64"),
        "p_marked_each": Value("float64"),
        "p_rest_each": Value("float64"),
        "success_probability": Value("float64"),
        "probs": List(Value("float64")),
        "aer_max_abs_diff": Value("float64"),
        "probs_noisy": List(Value("float64")),
        "seed": Value("uint64"),
        "generator": Value("string"),
    }
    return Features({k: types[k] for k in sorted(types)})


def _records(spec: DatasetSpec, split: str, start: int, items: list[Drawn]) -> list[dict[str, Any]]:
    problems = [GroverProblem(n, marked, k, style) for n, marked, k, style in items]
    dists = [two_level(p) for p in problems]
    targets = [render(p, "answer") for p in problems]
    target_tokens = [count_tokens(t) for t in targets]
    noise = depolarizing_noise(spec.noise_depolarizing) if spec.noise_depolarizing > 0 else None
    per_problem: list[dict[str, Any]] = []
    for j, (p, d, target, tt) in enumerate(
        zip(problems, dists, targets, target_tokens, strict=True)
    ):
        index = start + j
        seed = problem_seed(spec.seed, split, index)
        dense = d.dense() if p.n_qubits <= spec.dense_probs_max_n else None
        aer_diff = probs_noisy = None
        if p.n_qubits <= spec.aer_check_max_n and index < spec.aer_check_per_split:
            exact = dense if dense is not None else d.dense()
            aer = simulate(p, "aer")
            # 2 significant digits: the diff is rounding noise (~1e-16), keep reruns byte-identical
            aer_diff = float(f"{float(np.abs(aer - exact).max()):.1e}")
            if aer_diff > 1e-9:
                raise RuntimeError(f"Aer disagrees with the closed form on {p}: {aer_diff}")
            if noise is not None and p.n_qubits <= spec.noise_max_n:
                noisy = simulate(p, "aer", noise=noise)
                probs_noisy = [float(f"{x:.10g}") for x in noisy]
        per_problem.append(
            {
                "problem_id": p.key,
                "split": split,
                "index": index,
                "n_qubits": p.n_qubits,
                "marked": list(p.marked),
                "n_marked": p.n_marked,
                "iterations": p.iterations,
                "optimal_iterations": p.optimal_iterations,
                "iteration_rule": p.iteration_rule,
                "oracle_style": p.oracle_style,
                "target": target,
                "target_n_tokens": tt,
                "p_marked_each": d.p_marked_each,
                "p_rest_each": d.p_rest_each,
                "success_probability": d.success_probability,
                "probs": None if dense is None else dense.tolist(),
                "aer_max_abs_diff": aer_diff,
                "probs_noisy": probs_noisy,
                "seed": seed,
                "generator": GENERATOR_VERSION,
            }
        )
    records = []
    for fmt in spec.renderings:
        texts = [render(p, fmt) for p in problems]
        for base, text in zip(per_problem, texts, strict=True):
            rec_id = hashlib.sha256(f"{base['problem_id']}:{fmt}".encode()).hexdigest()
            records.append(
                {
                    **base,
                    "record_id": rec_id,
                    "rendering": fmt,
                    "text": text,
                    "n_chars": len(text),
                    "n_tokens": count_tokens(text),
                }
            )
    records.sort(key=lambda r: (r["index"], spec.renderings.index(r["rendering"])))
    return records


def _write_shard(
    spec_dict: dict[str, Any],
    out_dir: str,
    split: str,
    shard: int,
    start: int,
    items: list[Drawn],
) -> dict[str, Any]:
    spec = from_dict(DatasetSpec, spec_dict)
    folder = Path(out_dir) / "data" / split
    stem = folder / f"shard-{shard:05d}"
    records = _records(spec, split, start, items)
    data = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records)
    blob = data.encode()
    atomic_write_bytes(stem.with_suffix(".jsonl"), blob)
    files = {"jsonl": f"data/{split}/{stem.name}.jsonl"}
    if spec.parquet:
        files["parquet"] = _write_parquet(blob, stem.with_suffix(".parquet"), out_dir)
    by_fmt: dict[str, list[int]] = {}
    for r in records:
        by_fmt.setdefault(r["rendering"], []).append(r["n_tokens"])
    summary = {
        "split": split,
        "shard": shard,
        "records": len(records),
        "problems": len(items),
        "files": files,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "n_range": [
            min((r["n_qubits"] for r in records), default=0),
            max((r["n_qubits"] for r in records), default=0),
        ],
        "t_range": [
            min((r["n_marked"] for r in records), default=0),
            max((r["n_marked"] for r in records), default=0),
        ],
        "tokens": {f: {"sum": sum(v), "max": max(v)} for f, v in by_fmt.items()},
        "target_tokens": {
            "sum": sum(r["target_n_tokens"] for r in records[:: len(spec.renderings)]),
            "max": max((r["target_n_tokens"] for r in records), default=0),
        },
        "aer_checked": sum(r["aer_max_abs_diff"] is not None for r in records)
        // len(spec.renderings),
    }
    atomic_write_json(stem.with_suffix(".done.json"), summary)
    return summary


def _write_parquet(jsonl: bytes, path: Path, out_dir: str) -> str:
    try:
        import pyarrow.json as pj
        import pyarrow.parquet as pq
    except ImportError as err:
        raise GroverProblemError(
            "Parquet output needs the `datasets` package: pip install 'qhybrid[llm]' "
            "(or set parquet=false)"
        ) from err
    import io

    # The `datasets` Features schema (embedded in the file, so load_dataset restores it); the
    # table is parsed from the JSONL bytes by Arrow's C++ reader (Dataset.from_list converts row
    # by row in Python, ~10x slower). JSON floats are shortest round-trip reprs: exact.
    schema = _features().arrow_schema
    table = pj.read_json(
        io.BytesIO(jsonl),
        read_options=pj.ReadOptions(use_threads=False, block_size=1 << 26),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
    )
    table = table.select(schema.names).cast(schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())
    return str(path.relative_to(out_dir))


# ---------------------------------------------------------------- driver


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in (
        "numpy",
        "qiskit",
        "qiskit-aer",
        "qiskit-qasm3-import",
        "transformers",
        "tokenizers",
        "datasets",
        "pyarrow",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _shards(spec: DatasetSpec) -> Iterator[tuple[str, int, int, list[Drawn]]]:
    drawn = _draw(spec)
    for name in SPLITS:
        items = drawn[name]
        for shard, start in enumerate(range(0, max(len(items), 1), spec.shard_size)):
            yield name, shard, start, items[start : start + spec.shard_size]


def check_output(spec: DatasetSpec, out_dir: str | Path) -> list[tuple[str, int, int, list[Drawn]]]:
    """Everything :func:`generate_dataset` checks before it writes: the spec can be drawn, and
    ``out_dir`` is new, empty, or a folder of the same spec (to resume). Returns the shards."""
    out = Path(out_dir)
    shards = list(_shards(spec))  # draws every split: a spec that cannot be drawn fails here
    if out.exists() and not out.is_dir():
        raise GroverProblemError(f"dataset folder '{out}' is a file; pass a new folder")
    spec_path = out / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != config_to_dict(spec):
        raise GroverProblemError(
            f"{out} holds a dataset made from a different spec; choose a new folder or delete it"
        )
    return shards


def generate_dataset(spec: DatasetSpec, out_dir: str | Path) -> DatasetInfo:
    """Generate (or finish) the dataset described by ``spec`` in ``out_dir``.

    Shards already complete (their ``.done.json`` exists) are kept, so an interrupted run resumes;
    a folder made from a different spec is refused. Output bytes depend only on ``spec`` and the
    package versions.
    """
    out = Path(out_dir)
    spec_dict = config_to_dict(spec)
    shards = check_output(spec, out)
    spec_path = out / "spec.json"
    if not spec_path.exists():
        atomic_write_json(spec_path, spec_dict)
    todo, summaries = [], {}
    for split, shard, start, items in shards:
        done = out / "data" / split / f"shard-{shard:05d}.done.json"
        if done.exists():
            summaries[(split, shard)] = json.loads(done.read_text())
        else:
            todo.append((spec_dict, str(out), split, shard, start, items))
    logger.info("%d shards to write, %d already done", len(todo), len(summaries))
    if spec.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        # Import the heavy modules once here so forked workers inherit them (datasets alone
        # takes ~3 s to import).
        if spec.parquet:
            _features()
        if spec.aer_check_per_split > 0:
            from quantum.simulate import _aer_pass_manager

            _aer_pass_manager()

        # fork: workers inherit the loaded modules (no re-import of numpy/qiskit per worker) and,
        # unlike spawn, do not re-run an unguarded __main__; the parent has only sampled with
        # numpy so far (no thread pools to inherit).
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(spec.workers, len(todo))) as pool:
            for s in pool.starmap(_write_shard, todo):
                summaries[(s["split"], s["shard"])] = s
    else:
        for args in todo:
            s = _write_shard(*args)
            summaries[(s["split"], s["shard"])] = s
    manifest = _manifest(spec, summaries)
    atomic_write_json(out / "manifest.json", manifest)
    versions = _versions()
    provenance = {
        "generator": GENERATOR_VERSION,
        "seed": spec.seed,
        "spec": spec_dict,
        "versions": versions,
        "bit_order": BIT_ORDER,
        "iteration_rule": "floor(pi/4 * sqrt(2**n / t)), except a split's off_optimal share",
    }
    atomic_write_json(out / "provenance.json", provenance)
    atomic_write_text(out / "README.md", dataset_card(spec, manifest, versions))
    files = [out / f for s in summaries.values() for f in s["files"].values()]
    return DatasetInfo(
        out_dir=out,
        splits={k: v["records"] for k, v in manifest["splits"].items()},
        problems={k: v["problems"] for k, v in manifest["splits"].items()},
        files=sorted(files),
        manifest=manifest,
    )


def _manifest(spec: DatasetSpec, summaries: dict[tuple[str, int], Any]) -> dict[str, Any]:
    splits = {}
    for name in SPLITS:
        shards = [summaries[k] for k in sorted(summaries) if k[0] == name]
        tokens: dict[str, dict[str, int]] = {}
        for s in shards:
            for f, v in s["tokens"].items():
                agg = tokens.setdefault(f, {"sum": 0, "max": 0})
                agg["sum"] += v["sum"]
                agg["max"] = max(agg["max"], v["max"])
        problems = sum(s["problems"] for s in shards)
        nonempty = [s for s in shards if s["records"]]
        splits[name] = {
            "records": sum(s["records"] for s in shards),
            "problems": problems,
            "n_range": [
                min((s["n_range"][0] for s in nonempty), default=0),
                max((s["n_range"][1] for s in nonempty), default=0),
            ],
            "t_range": [
                min((s["t_range"][0] for s in nonempty), default=0),
                max((s["t_range"][1] for s in nonempty), default=0),
            ],
            "mean_tokens": {f: round(v["sum"] / max(problems, 1), 2) for f, v in tokens.items()},
            "max_tokens": {f: v["max"] for f, v in tokens.items()},
            "mean_target_tokens": round(
                sum(s["target_tokens"]["sum"] for s in shards) / max(problems, 1), 2
            ),
            "aer_checked": sum(s["aer_checked"] for s in shards),
            "shards": [
                {"files": s["files"], "sha256": s["sha256"], "records": s["records"]}
                for s in shards
            ],
        }
    return {"generator": GENERATOR_VERSION, "seed": spec.seed, "splits": splits}


def dataset_card(spec: DatasetSpec, manifest: dict[str, Any], versions: dict[str, str]) -> str:
    """The dataset card (README.md): HF YAML header, splits, schema, conventions, versions."""
    configs = "\n".join(
        f"      - split: {name}\n        path: data/{name}/*.parquet" for name in SPLITS
    )
    rows = "\n".join(
        f"| {name} | {s['problems']} | {s['records']} | {s['n_range'][0]}-{s['n_range'][1]} | "
        f"{s['t_range'][0]}-{s['t_range'][1]} | {spec.split(name).k_regime} | "
        + ", ".join(f"{f} {v}" for f, v in s["mean_tokens"].items())
        + f" | {s['aer_checked']} |"
        for name, s in manifest["splits"].items()
    )
    schema = "\n".join(f"| `{k}` | {v} |" for k, v in RECORD_FIELDS.items())
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"""---
configs:
  - config_name: default
    data_files:
{configs}
license: apache-2.0
task_categories:
  - text-generation
tags:
  - quantum
  - grover
---

# Grover search circuits and their exact output distributions

Generated by `{GENERATOR_VERSION}` (qhybrid) from master seed {spec.seed}, oracle styles
{", ".join(f"`{o}`" for o in spec.oracle_styles)}, renderings {", ".join(f"`{r}`" for r in spec.renderings)}.
Each record is one problem x one rendering; `target` is the exact distribution in closed form.

## Splits

All splits are disjoint on the marked set (n, sorted marked states) and hence on `problem_id`;
test splits are drawn before `train`.

| split | problems | records | n | t | k | mean tokens per rendering | Aer-checked |
|---|---|---|---|---|---|---|---|
{rows}

## Conventions

- Bit order: {BIT_ORDER}.
- Iterations: k = floor(pi/4 sqrt(2**n / t)) (GroverGPT-2 rule); `test_ood_k`, and the share of
  each split given in its k column, draw k from {{0, k*//2, k*+1, 2k*}} without k*. The rule is
  stored per record (`iteration_rule`).
- Only pairs with 2t < 2**n occur (Grover search amplifies only t < 2**n / 2); the test splits take
  at most half of the marked sets of any (n, t), and every (n, t) of `test_id` occurs in `train`.
- Targets are analytic: with theta = asin(sqrt(t / 2**n)), each marked state has probability
  sin^2((2k+1) theta) / t and each other state cos^2((2k+1) theta) / (2**n - t). For
  n <= {spec.aer_check_max_n} the first {spec.aer_check_per_split} problems of each split are
  cross-checked against Qiskit Aer's statevector (`aer_max_abs_diff`).
- `target` format: `marked <bits> ... p_marked <digits> p_rest <digits>`, one token per
  character of `"%.4e"`; `compact` format: `qubits <n> h repeat <k> oracle <style>
  flip <bits> ... diffuse end measure` (see docs/quantum.md).
- Token counts use `quantum.build_tokenizer()` (word-level, one token per digit/bit).

## Schema

| field | meaning |
|---|---|
{schema}

## Provenance

{vers}. Files and sha256 sums: `manifest.json`; spec and versions: `provenance.json`.
"""
