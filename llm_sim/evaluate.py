"""``qhybrid llm eval``: score trained models per split and per n / t / k-regime, beside baselines.

For every model (one per training seed) and every test problem: greedy-decode the answer, parse it
with :func:`~llm_sim.parse.parse_answer` and score it with :func:`~llm_sim.metrics.score` against the
exact distribution. Baselines on the same problems:

- ``uniform``: 1/2^n on every state;
- ``oracle_1/t``: read the marked states off the circuit and put 1/t on each (the shortcut that
  ignores k; exposes non-optimal-k failures);
- ``ceiling``: read the circuit with a rule-based parser and apply the closed form (the best any
  model can do; the task's value lies in held-out structure, not in beating this);
- ``untrained``: the same architecture with its initial weights.

Groups report the mean over seeds of the per-seed mean, with a hierarchical bootstrap 95% interval
(resample seeds, then problems within each seed).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm_sim.data import Problem, TaskFormat, encode_prompt, iterations_of, k_regime, prompt_text
from llm_sim.metrics import METRIC_NAMES, Distribution, grover_two_level, score
from llm_sim.parse import parse_answer
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "EvalConfig",
    "aggregate",
    "baseline_records",
    "evaluate_model",
    "parse_bits_prompt",
    "parse_compact_prompt",
    "plot_vs_n",
    "write_tables",
]

SPLITS = ("test_id", "test_ood_n", "test_ood_t", "test_ood_k")
HEADLINE = ("set_acc", "sa_0.3", "tvd", "cf_renorm", "p_marked_err", "parsed")


@dataclass(frozen=True)
class EvalConfig:
    """``qhybrid llm eval``: evaluate the models of a ``qhybrid llm train`` run folder."""

    name: str = "llm-eval"  # run-folder prefix
    run: str = ""  # the training run folder (holds model-seed*/ and splits.json)
    splits: tuple[str, ...] = SPLITS  # test splits to score
    max_per_split: int = 0  # problems per split (0 = all)
    batch_size: int = 64  # prompts per generate call
    untrained: bool = True  # also score the untrained architecture (a baseline)
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals
    device: str = "auto"  # "auto", "cpu" or "cuda"


def max_new_tokens(problems: Sequence[Any], task: TaskFormat, tokenizer: Any) -> int:
    """Generation budget: the longest target in tokens plus slack (rambling models get cut)."""
    from llm_sim.data import answer_text

    longest = max(
        len(
            tokenizer.encode(
                answer_text(p, task.answer, task.digits, task.fmt), add_special_tokens=False
            )
        )
        for p in problems
    )
    return longest + 8


def evaluate_model(
    model: Any, tokenizer: Any, task: TaskFormat, problems: Sequence[Any], *, batch_size: int = 64
) -> list[dict[str, Any]]:
    """One record per problem: n, t, k-regime, every metric, the parse reason and the raw text."""
    from llm_sim.decode import generate_batched

    if not problems:
        return []
    prompts = [encode_prompt(p, tokenizer, task) for p in problems]
    texts = generate_batched(model, tokenizer, prompts, max_new_tokens=max_new_tokens(problems, task, tokenizer),
                             batch_size=batch_size)  # fmt: skip
    out = []
    for p, text in zip(problems, texts, strict=True):
        pred = parse_answer(text)
        out.append({**_keys(p), **score(pred, p), "reason": pred.reason, "text": text[:300]})
    return out


def _keys(p: Any) -> dict[str, Any]:
    return {"n": p.n_qubits, "t": len(p.marked), "k": iterations_of(p), "k_regime": k_regime(p)}


_BITS = re.compile(r"k=(\d+)\s*o=([xc,]+)")


def parse_bits_prompt(text: str) -> Problem | None:
    """The rule-based circuit reader of the ceiling baseline: (n, marked, k) from a "bits" prompt."""
    m = _BITS.search(text)
    if not m:
        return None
    rows = m.group(2).split(",")
    marked = tuple(sorted("".join("1" if c == "c" else "0" for c in r) for r in rows))
    return Problem(len(rows[0]), marked, int(m.group(1)))


_COMPACT = re.compile(
    r"qubits((?:\s\d)+)\sh\srepeat((?:\s\d)+)\soracle\s\S+((?:\sflip(?:\s[01])+)+)\sdiffuse"
)


def parse_compact_prompt(text: str) -> Problem | None:
    """The same reader for quantum's compact rendering (``qubits 5 h repeat 3 oracle ... flip 0 1 ...``)."""
    m = _COMPACT.search(text)
    if not m:
        return None
    n = int(m.group(1).replace(" ", ""))
    k = int(m.group(2).replace(" ", ""))
    rows = [r.replace(" ", "") for r in m.group(3).split("flip") if r.strip()]
    if not rows or any(len(r) != n for r in rows):
        return None
    return Problem(n, tuple(sorted(rows)), k)


def read_circuit(problem: Any, task: TaskFormat) -> Problem | None:
    """Read (n, marked, k) back from the prompt text by rule (the ceiling and p=1/t baselines)."""
    if task.fmt == "compact":
        return parse_compact_prompt(prompt_text(problem, "compact"))
    return parse_bits_prompt(prompt_text(problem, "bits"))


def baseline_records(problems: Sequence[Any], task: TaskFormat) -> dict[str, list[dict[str, Any]]]:
    """Scores of the uniform, p=1/t shortcut and parser + closed-form ceiling baselines."""
    out: dict[str, list[dict[str, Any]]] = {"uniform": [], "oracle_1/t": [], "ceiling": []}
    for p in problems:
        n, t = p.n_qubits, len(p.marked)
        uniform = Distribution({}, rest_each=2.0**-n, n_qubits=n)
        out["uniform"].append({**_keys(p), **score(uniform, p)})
        read = read_circuit(p, task)  # the circuit, read back by rule
        if read is None:
            raise QHybridError(f"the rule-based reader could not read the {task.fmt} prompt of {p}")
        shortcut = Distribution({s: 1.0 / t for s in read.marked}, 0.0, n)
        out["oracle_1/t"].append({**_keys(p), **score(shortcut, p)})
        p_m, p_o = grover_two_level(read.n_qubits, len(read.marked), read.iterations)
        ceiling = Distribution(dict.fromkeys(read.marked, p_m), p_o, n)
        out["ceiling"].append({**_keys(p), **score(ceiling, p)})
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation


def _group_key(r: Mapping[str, Any], by: str) -> Any:
    return r[by] if by != "all" else "all"


def aggregate(
    per_seed: Sequence[Sequence[Mapping[str, Any]]],
    by: str = "all",
    *,
    metrics: Sequence[str] = HEADLINE,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows ``{by: value, metric: mean, metric_lo, metric_hi, problems, seeds}``.

    ``per_seed[i]`` holds the records of seed i on the same problems. Mean = mean over seeds of the
    per-seed mean; interval = 2.5/97.5 percentiles of a hierarchical bootstrap (seeds, then problems).
    """
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[list[Mapping[str, Any]]]] = defaultdict(lambda: [[] for _ in per_seed])
    for i, recs in enumerate(per_seed):
        for r in recs:
            groups[_group_key(r, by)][i].append(r)
    rows = []
    for key in sorted(groups, key=lambda g: (str(type(g)), g)):
        seeds = [s for s in groups[key] if s]
        row: dict[str, Any] = {
            by: key,
            "problems": len(seeds[0]) if seeds else 0,
            "seeds": len(seeds),
        }
        for m in metrics:
            vals = [np.array([float(r[m]) for r in s]) for s in seeds]
            row[m] = float(np.mean([v.mean() for v in vals]))
            if n_boot and (len(vals) > 1 or len(vals[0]) > 1):
                boots = np.empty(n_boot)
                for b in range(n_boot):
                    pick = rng.integers(0, len(vals), len(vals))
                    boots[b] = np.mean(
                        [vals[j][rng.integers(0, len(vals[j]), len(vals[j]))].mean() for j in pick]
                    )
                row[f"{m}_lo"], row[f"{m}_hi"] = (
                    float(x) for x in np.percentile(boots, [2.5, 97.5])
                )
        rows.append(row)
    return rows


def _fmt_ci(row: Mapping[str, Any], m: str) -> str:
    v = row.get(m)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    lo, hi = row.get(f"{m}_lo"), row.get(f"{m}_hi")
    return f"{v:.3f}" if lo is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def display_rows(
    rows: Sequence[Mapping[str, Any]], by: str, label: str, metrics: Sequence[str] = HEADLINE
) -> list[dict[str, Any]]:
    """Rows for a Markdown table: ``mean [lo, hi]`` strings."""
    return [{"model": label, by: r[by], "problems": r["problems"], "seeds": r["seeds"],
             **{m: _fmt_ci(r, m) for m in metrics}} for r in rows]  # fmt: skip


def write_tables(results: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """``eval.json`` (everything) and ``eval.md`` (one table per split and grouping)."""
    from qhybrid.report import markdown_table

    atomic_write_json(out_dir / "eval.json", results)
    parts = ["# Evaluation\n"]
    tables: dict[str, str] = {}
    for split, groups in results["tables"].items():
        for by, per_model in groups.items():
            rows = [
                row
                for label, model_rows in per_model.items()
                for row in display_rows(model_rows, by, label)
            ]
            md = markdown_table(rows)
            tables[f"{split}/{by}"] = md
            parts.append(f"## {split} by {by}\n\n{md}")
    atomic_write_text(out_dir / "eval.md", "\n".join(parts))
    return tables


def build_tables(
    per_model: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    splits: Sequence[str],
    *,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """``{split: {by: {model: rows}}}`` for by in all, n, t, k_regime."""
    out: dict[str, Any] = {}
    for split in splits:
        out[split] = {}
        for by in ("all", "n", "t", "k_regime"):
            out[split][by] = {}
            for label, seeds in per_model.items():
                recs = [[r for r in s if r["split"] == split] for s in seeds]
                if any(recs):
                    out[split][by][label] = aggregate(recs, by, n_boot=n_boot)
    return out


def plot_vs_n(
    per_model: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    train_n: Sequence[int],
    *,
    n_boot: int = 300,
) -> Any:
    """Set accuracy and TVD against n (all splits with optimal k), training range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, seeds in per_model.items():
        recs = [[r for r in s if r["k_regime"] == "optimal" and r["split"] in ("test_id", "test_ood_n")]
                for s in seeds]  # fmt: skip
        if not any(recs):
            continue
        rows = aggregate(recs, "n", metrics=("set_acc", "tvd"), n_boot=n_boot)
        ns = [r["n"] for r in rows]
        for ax, m in zip(axes, ("set_acc", "tvd"), strict=True):
            y = [r[m] for r in rows]
            lo = [r.get(f"{m}_lo", r[m]) for r in rows]
            hi = [r.get(f"{m}_hi", r[m]) for r in rows]
            ax.plot(ns, y, "o-", label=label)
            ax.fill_between(ns, lo, hi, alpha=0.15)
    for ax, m in zip(axes, ("set accuracy", "total variation distance"), strict=True):
        ax.axvspan(
            min(train_n) - 0.5, max(train_n) + 0.5, color="grey", alpha=0.15, label="training n"
        )
        ax.set(xlabel="qubits n", ylabel=m)
    axes[0].axhline(0.9, ls=":", c="k", lw=0.8)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def evaluate_run(
    config: EvalConfig, out_dir: Path, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Evaluate every ``model-seed*`` folder of a training run, plus baselines; write tables + plot."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_sim.training import read_splits

    root = Path(config.run)
    model_dirs = sorted(root.glob("model-seed*"))
    if not model_dirs or not (root / "splits.json").is_file():
        raise QHybridError(
            f"run={str(root)!r} has no model-seed*/ folders and splits.json; pass the folder "
            "'qhybrid llm train' printed"
        )
    splits = read_splits(root / "splits.json")
    wanted = [s for s in config.splits if s in splits]
    problems = []
    for s in wanted:
        ps = splits[s][: config.max_per_split or None]
        problems += [(s, p) for p in ps]
    meta = json.loads((model_dirs[0] / "task.json").read_text())
    task = TaskFormat(**meta["task"])
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else (
        "cpu" if config.device == "auto" else config.device)  # fmt: skip
    per_model: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    probs_only = [p for _, p in problems]
    for d in model_dirs:
        tok = AutoTokenizer.from_pretrained(d)
        model: Any = AutoModelForCausalLM.from_pretrained(d)
        model.to(torch.device(device))
        recs = evaluate_model(model, tok, task, probs_only, batch_size=config.batch_size)
        per_model["model"].append(
            [{**r, "split": s} for (s, _), r in zip(problems, recs, strict=True)]
        )
        if config.untrained:
            torch.manual_seed(int(d.name.removeprefix("model-seed") or 0))
            fresh: Any = AutoModelForCausalLM.from_config(model.config)
            fresh.to(torch.device(device))
            recs = evaluate_model(fresh, tok, task, probs_only, batch_size=config.batch_size)
            per_model["untrained"].append(
                [{**r, "split": s} for (s, _), r in zip(problems, recs, strict=True)]
            )
        if progress:
            progress(f"evaluated {d.name}")
    for label, recs in baseline_records(probs_only, task).items():
        per_model[label] = [[{**r, "split": s} for (s, _), r in zip(problems, recs, strict=True)]]
    tables = build_tables(per_model, wanted, n_boot=config.bootstrap)
    train_n = sorted({p.n_qubits for p in splits.get("train", [])}) or [3, 6]
    results = {"run": str(root), "task": meta["task"], "n_params": meta.get("n_params"),
               "seeds": [d.name for d in model_dirs], "tables": tables,
               "records": {k: v for k, v in per_model.items() if k == "model"}}  # fmt: skip
    write_tables(results, out_dir)
    fig = plot_vs_n({k: v for k, v in per_model.items() if k != "ceiling"}, train_n)
    from qhybrid.runs import atomic_open

    with atomic_open(out_dir / "eval_vs_n.png", "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    results["figure"] = str(out_dir / "eval_vs_n.png")
    return results


__all__ += ["build_tables", "display_rows", "evaluate_run", "max_new_tokens", "METRIC_NAMES"]
