"""Ablation of position ids x prompt x answer format for qubit extrapolation (train n <= 6, test n to 60).

Every cell trains the same model with the same data and budget (``--config`` plus the cell's
``task`` settings, one seed) and is scored on the same probe problems: ``test_id`` (n = 2-6) and,
for each n in ``--ns``, problems at the optimal k (set accuracy; ``named_set``, whether the answer
names exactly the marked states, whatever its probability) and at a non-optimal k (|p̂ - p|).

Cells (``task.positions`` kind / random gap / random stride, and ``task.answer``):

- ``sequential``: ids 0, 1, 2, ... ;
- ``nope``: no position ids (all 0);
- ``coupled``: answer bits take the ids of the prompt bits they copy, no randomisation;
- ``coupled+gap``: plus a random gap U{0..1024} between header and flips in training;
- ``coupled+gap+stride``: plus random id steps (per sequence U{1..s}, s ~ U{1..32}; the default);

crossed with the prompt (``compact``: n and k in decimal in the header; ``compact_scaled``: k on the
scale of the rotation at the end, the default) and the answer (``marked_p``: p_marked in fixed
point; ``marked_phase``: the rotation, then the success probability, the default; ``closed``:
p_marked and p_rest in scientific notation). A cell is ``positions/prompt/answer``. Each cell
reports, per group, set accuracy and named set at the optimal k, TVD (not renormalised) at the
optimal k, and |p̂ - p| at a non-optimal k. Results are appended cell by cell to ``--out``
(with provenance); a rerun skips finished cells.

    python benchmarks/bench_llm_ablation.py --config llm_sim_quick --cells \
        coupled+gap+stride/compact/marked_p coupled+gap+stride/compact_scaled/marked_p \
        coupled+gap+stride/compact_scaled/marked_phase
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from llm_sim.evaluate import evaluate_model
from llm_sim.positions import PositionScheme
from llm_sim.training import LLMTrainConfig, train_run
from qhybrid.config import resolve_config
from qhybrid.runs import create_run, write_results
from quantum.dataset import DatasetSpec, SplitSpec, draw_splits

POSITIONS = {
    "sequential": PositionScheme("sequential"),
    "nope": PositionScheme("nope"),
    "coupled": PositionScheme("coupled", gap=0, stride=1, eval_stride=1),
    "coupled+gap": PositionScheme("coupled", gap=1024, stride=1, eval_stride=1),
    "coupled+gap+stride": PositionScheme("coupled"),  # the default: gap 1024, strides to 32
}
PROMPTS = ("compact", "compact_scaled")
ANSWERS = ("marked_p", "marked_phase", "closed")
DEPENDS = ("llm_sim", "quantum", "qhybrid/train.py")


def probe_problems(ns: list[int], per_n: int, seed: int) -> list[tuple[str, Any]]:
    """(group, problem): test_id, then per n half optimal and half non-optimal k, t = 1-6."""
    out = [("test_id", p) for p in draw_splits(DatasetSpec(seed=seed))["test_id"][:100]]
    for n in ns:
        spec = DatasetSpec(
            seed=seed + n,
            oracle_styles=("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"),
            renderings=("compact",),
            train=SplitSpec(2, 6, 1, 3, 50),
            test_ood_n=SplitSpec(n, n, 1, 6, per_n, off_optimal=0.5),
        )
        out += [(f"n={n}", p) for p in draw_splits(spec)["test_ood_n"]]
    return out


def score_cell(records: list[dict[str, Any]], groups: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for g in dict.fromkeys(groups):
        recs = [r for r, gg in zip(records, groups, strict=True) if gg == g]
        opt = [r for r in recs if r["k_regime"] == "optimal"]
        non = [r for r in recs if r["k_regime"] != "optimal"]
        mean = lambda rs, m: round(sum(r[m] for r in rs) / len(rs), 4) if rs else None  # noqa: E731
        row[g] = {
            "set_acc": mean(opt, "set_acc"),
            "named_set": mean(opt, "named_set"),
            "tvd_raw": mean(opt, "tvd_raw"),
            "p_err_nonopt": mean(non, "p_marked_err"),
            "problems": len(recs),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="llm_sim_ablation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ns", type=int, nargs="*", default=[8, 12, 20, 40, 60])
    ap.add_argument("--per-n", type=int, default=48)
    ap.add_argument("--cells", nargs="*", default=None, help="e.g. coupled/marked_p (default: all)")
    ap.add_argument("--out", default="benchmarks/results/llm_ablation.json")
    args = ap.parse_args()
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {"cells": {}}
    base = resolve_config(LLMTrainConfig, args.config, [f"seeds=[{args.seed}]"])
    probe = probe_problems(args.ns, args.per_n, seed=1000)
    groups, problems = [g for g, _ in probe], [p for _, p in probe]
    cells = args.cells or [f"{p}/{f}/{a}" for p in POSITIONS for f in PROMPTS for a in ANSWERS]
    for cell in cells:
        if cell in done["cells"]:
            print(f"{cell}: done before, skipped", flush=True)
            continue
        pos, fmt, answer = cell.split("/")
        cfg = replace(
            base,
            name="llm-ablation",
            task=replace(base.task, positions=POSITIONS[pos], fmt=fmt, answer=answer),
        )
        run = create_run(cfg.name, cfg, root="runs", seed=args.seed)
        print(f"{cell}: training into {run.path}", flush=True)
        t0 = time.perf_counter()
        (trained,) = train_run(cfg, run.path)
        train_s = time.perf_counter() - t0
        recs = evaluate_model(trained.model, trained.tokenizer, cfg.task, problems)
        done["cells"][cell] = {
            "positions": pos,
            "prompt": fmt,
            "answer": answer,
            "train_seconds": round(train_s),
            "n_params": trained.n_params,
            "run": str(run.path),
            "scores": score_cell(recs, groups),
        }
        done["config"], done["seed"], done["ns"] = args.config, args.seed, args.ns
        done = write_results(
            out, {k: v for k, v in done.items() if k != "provenance"}, depends=DEPENDS
        )
        print(f"{cell}: {json.dumps(done['cells'][cell]['scores'])}", flush=True)


if __name__ == "__main__":
    main()
