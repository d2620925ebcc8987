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
(resample seeds, then problems within each seed). ``anchor=FILE`` adds the problems of a
GroverGPT-2 record file (:mod:`llm_sim.anchor`) as the split ``anchor``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm_sim.data import TaskFormat, answer_text, encode_prompt, k_regime
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
    "plot_vs_n",
    "write_tables",
]

SPLITS = ("test_id", "test_ood_n", "test_ood_t", "test_ood_k")
BASELINES = ("uniform", "oracle_1/t", "ceiling", "untrained")
# The distribution first (TVD without renormalising, the anchor's SA@0.3, the number), then naming
# and ranking the marked set: set accuracy passes any p just above 2^-n, TVD does not.
HEADLINE = (
    "tvd_raw",
    "sa_0.3",
    "p_marked_err",
    "mass_error",
    "set_acc",
    "named_set",
    "marked_recall",
    "parsed",
)


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
    anchor: str = ""  # a GroverGPT-2 record file (JSON list) to score as the split "anchor"
    device: str = "auto"  # "auto", "cpu" or "cuda"

    def __post_init__(self) -> None:
        if self.max_per_split < 0 or self.batch_size < 1 or self.bootstrap < 0:
            raise QHybridError(
                f"max_per_split={self.max_per_split} (>= 0), batch_size={self.batch_size} (>= 1) "
                f"and bootstrap={self.bootstrap} (>= 0) are out of range"
            )


SLACK = 8  # tokens of generation budget beyond the longest answer the format allows


def max_new_tokens(problems: Sequence[Any], task: TaskFormat, tokenizer: Any) -> list[int]:
    """Generation budget per problem from its n, t and the answer format, never from its answer.

    ``marked_p``: t blocks of ``marked`` + n bits, ``p_marked``, ``0 .`` and ``digits`` digits;
    ``marked_phase``: the same blocks, ``phase 0 . ddd`` and ``p_success``, ``0 .``, ``digits``;
    ``closed``: the same blocks and two numbers of ``d . dddd e - dd`` (10 tokens each) with their
    keywords; ``dict`` / ``anchor``: the answer of the problem with the same n, t and k whose
    marked states are the t smallest (the most ``x`` gates and zeros). Plus :data:`SLACK`.
    """
    from quantum import GroverProblem

    out = []
    for p in problems:
        n, t = p.n_qubits, p.n_marked
        if task.answer == "marked_p":
            need = t * (n + 1) + 3 + task.digits
        elif task.answer == "marked_phase":
            need = t * (n + 1) + 6 + 3 + task.digits
        elif task.answer == "closed":
            need = t * (n + 1) + 2 * 11
        else:
            worst = GroverProblem(n, [format(i, f"0{n}b") for i in range(t)], p.iterations)
            need = len(tokenizer.encode(answer_text(worst, task), add_special_tokens=False))
        out.append(need + SLACK)
    return out


def evaluate_model(
    model: Any, tokenizer: Any, task: TaskFormat, problems: Sequence[Any], *, batch_size: int = 64
) -> list[dict[str, Any]]:
    """One record per problem: n, t, k-regime, every metric, the parse reason and the raw text."""
    from llm_sim.decode import generate_batched

    if not problems:
        return []
    prompts = [encode_prompt(p, tokenizer, task) for p in problems]
    budget = max_new_tokens(problems, task, tokenizer)
    texts = generate_batched(
        model, tokenizer, prompts, task.positions, max_new_tokens=budget, batch_size=batch_size
    )
    out = []
    for p, text in zip(problems, texts, strict=True):
        pred = parse_answer(text)
        out.append({**_keys(p), **score(pred, p), "reason": pred.reason, "text": text[:300]})
    return out


def _keys(p: Any) -> dict[str, Any]:
    return {"n": p.n_qubits, "t": p.n_marked, "k": p.iterations, "k_regime": k_regime(p)}


def baseline_records(problems: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
    """Scores of the uniform, p=1/t shortcut and parser + closed-form ceiling baselines."""
    from quantum.render import parse_compact, render

    out: dict[str, list[dict[str, Any]]] = {"uniform": [], "oracle_1/t": [], "ceiling": []}
    for p in problems:
        n, t = p.n_qubits, len(p.marked)
        uniform = Distribution({}, rest_each=2.0**-n, n_qubits=n)
        out["uniform"].append({**_keys(p), **score(uniform, p)})
        read = parse_compact(render(p, "compact"))  # the circuit, read back by a rule
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
    return [
        {
            "model": label,
            by: r[by],
            "problems": r["problems"],
            "seeds": r["seeds"],
            **{m: _fmt_ci(r, m) for m in metrics},
        }
        for r in rows
    ]


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


CURVES = (
    ("tvd_raw", "TVD, not renormalised (optimal k)", "optimal"),
    ("sa_0.3", "SA@0.3, the anchor's metric (optimal k)", "optimal"),
    ("p_marked_err", "|p̂ - p| per marked state (non-optimal k)", "non-optimal"),
    ("set_acc", "set accuracy; dashed: named set (optimal k)", "optimal"),
)


def curve_rows(
    per_seed: Sequence[Sequence[Mapping[str, Any]]], regime: str, n_boot: int = 300
) -> list[dict[str, Any]]:
    """Per-n rows (mean and interval of every curve metric) over the splits that vary n."""
    keep = [
        [
            r
            for r in s
            if r["split"] in ("test_id", "test_ood_n")
            and (r["k_regime"] == "optimal") == (regime == "optimal")
        ]
        for s in per_seed
    ]
    if not any(keep):
        return []
    metrics = (*(m for m, _, _ in CURVES), "named_set", "marked_recall", "mass_error", "parsed")
    return aggregate(keep, "n", metrics=metrics, n_boot=n_boot)


def plot_vs_n(
    per_model: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    train_n: Sequence[int],
    *,
    n_boot: int = 300,
) -> Any:
    """TVD, SA@0.3, the number's error at non-optimal k and set accuracy against n; training range
    shaded.

    One colour per model in every panel (baselines included: the p = 1/t rule and the parser +
    closed-form ceiling are what TVD and SA@0.3 are judged against), one legend under the panels
    (it covers no curve), the targets drawn as labelled dotted lines, and the model's "named set"
    curve dashed on top of its set accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4), layout="constrained")
    colours = dict(zip(per_model, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for label, seeds in per_model.items():
        for regime in ("optimal", "non-optimal"):
            rows = curve_rows(seeds, regime, n_boot)
            for ax, (m, _, want) in zip(axes, CURVES, strict=True):
                if not rows or want != regime:
                    continue
                ns, c = [r["n"] for r in rows], colours.get(label)
                ax.plot(ns, [r[m] for r in rows], "o-", ms=3, c=c, label=label)
                if m == "set_acc" and label not in BASELINES:  # naming the set, whatever the number
                    named = [r["named_set"] for r in rows]
                    ax.plot(ns, named, "--", lw=2, c=c, zorder=5, label=f"{label}: named set")
                lo = [r.get(f"{m}_lo", r[m]) for r in rows]
                ax.fill_between(ns, lo, [r.get(f"{m}_hi", r[m]) for r in rows], color=c, alpha=0.15)
    for ax, (_, title, _) in zip(axes, CURVES, strict=True):
        ax.axvspan(min(train_n) - 0.5, max(train_n) + 0.5, color="grey", alpha=0.15)
        ax.set(xlabel="qubits n (grey: trained)", title=title)
        ax.title.set_fontsize(9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (axes[1], axes[3]):
        ax.set_ylim(-0.05, 1.05)
    axes[3].axhline(0.99, ls=":", c="k", lw=0.8, label="target 0.99")
    axes[2].axhline(0.05, ls=":", c="grey", lw=0.8, label="target 0.05")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=4, fontsize=8)
    return fig


@dataclass
class EvalInputs:
    """What :func:`evaluate_run` scores, checked before anything is written."""

    model_dirs: list[Path]
    task: TaskFormat
    meta: dict[str, Any]
    problems: list[tuple[str, Any]]  # (split, problem)
    train_n: list[int]


def eval_inputs(config: EvalConfig) -> EvalInputs:
    """Read and check a training run folder (and the anchor file); raise before any output."""
    from llm_sim.anchor import import_anchor
    from llm_sim.training import read_splits
    from qhybrid.config import from_dict

    root = Path(config.run)
    model_dirs = sorted(d for d in root.glob("model-seed*") if (d / "task.json").is_file())
    if not config.run or not model_dirs or not (root / "splits.json").is_file():
        raise QHybridError(
            f"run={config.run!r} has no finished model-seed*/ folder and splits.json; pass the "
            "folder 'qhybrid llm train' printed (a run still training: 'qhybrid llm train "
            "--resume RUN' first)"
        )
    splits = read_splits(root / "splits.json")
    if config.anchor:
        splits["anchor"] = import_anchor(config.anchor)
    wanted = [
        s
        for s in dict.fromkeys((*config.splits, *(["anchor"] if config.anchor else [])))
        if splits.get(s)
    ]
    if not wanted:
        raise QHybridError(
            f"none of splits={list(config.splits)} has problems in {root / 'splits.json'} "
            f"(it holds {sorted(k for k, v in splits.items() if v)}); choose some of those"
        )
    meta = json.loads((model_dirs[0] / "task.json").read_text(encoding="utf-8"))
    problems = [(s, p) for s in wanted for p in splits[s][: config.max_per_split or None]]
    train_n = sorted({p.n_qubits for p in splits.get("train", [])}) or [2, 6]
    return EvalInputs(model_dirs, from_dict(TaskFormat, meta["task"]), meta, problems, train_n)


def evaluate_run(
    config: EvalConfig,
    out_dir: Path,
    *,
    inputs: EvalInputs | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every ``model-seed*`` folder of a training run, plus baselines; write tables + plot."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qhybrid.train import resolve_device

    inputs = inputs or eval_inputs(config)
    task, problems = inputs.task, [p for _, p in inputs.problems]
    device = resolve_device(config.device)
    per_model: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)

    def tag(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "split": s} for (s, _), r in zip(inputs.problems, recs, strict=True)]

    for d in inputs.model_dirs:
        tok = AutoTokenizer.from_pretrained(d)
        model: Any = AutoModelForCausalLM.from_pretrained(d)
        model.to(device)
        per_model["model"].append(
            tag(evaluate_model(model, tok, task, problems, batch_size=config.batch_size))
        )
        if config.untrained:
            torch.manual_seed(int(d.name.removeprefix("model-seed") or 0))
            fresh: Any = AutoModelForCausalLM.from_config(model.config)
            fresh.to(device)
            per_model["untrained"].append(
                tag(evaluate_model(fresh, tok, task, problems, batch_size=config.batch_size))
            )
        if progress:
            progress(f"evaluated {d.name} on {len(problems)} problems")
    for label, recs in baseline_records(problems).items():
        per_model[label] = [tag(recs)]
    wanted = list(dict.fromkeys(s for s, _ in inputs.problems))
    tables = build_tables(per_model, wanted, n_boot=config.bootstrap)
    curves = {
        label: {
            regime: curve_rows(seeds, regime, n_boot=config.bootstrap)
            for regime in ("optimal", "non-optimal")
        }
        for label, seeds in per_model.items()
    }
    results = {
        "run": config.run,
        "task": inputs.meta["task"],
        "n_params": inputs.meta.get("n_params"),
        "seeds": [d.name for d in inputs.model_dirs],
        "tables": tables,
        "curves": curves,
        "records": {k: v for k, v in per_model.items() if k == "model"},
    }
    write_tables(results, out_dir)
    fig = plot_vs_n(per_model, inputs.train_n)
    from qhybrid.runs import atomic_open

    with atomic_open(out_dir / "eval_vs_n.png", "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    results["figure"] = str(out_dir / "eval_vs_n.png")
    return results


__all__ += [
    "build_tables",
    "curve_rows",
    "display_rows",
    "eval_inputs",
    "evaluate_run",
    "max_new_tokens",
    "METRIC_NAMES",
]
