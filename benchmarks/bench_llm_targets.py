"""The llm_sim targets: train on n <= 6, then in distribution, qubit extrapolation to 60, non-optimal k.

Trains one model per seed with ``qhybrid llm train`` settings from a TOML file, evaluates with
``qhybrid llm eval`` (hierarchical bootstrap over seeds and problems) and writes the target numbers
beside the baselines (the p = 1/t shortcut, uniform, the parser + closed-form ceiling):

- in distribution (test_id): set accuracy with its interval, TVD;
- extrapolation at the optimal k (test_ood_n, n = 7..60): set accuracy, named set, recall, TVD
  and |p̂ - p| per n, and the smallest set accuracy over n;
- the number at unseen n and non-optimal k (test_ood_n, k in {0, k*/2, k*+1, 2k*}): |p̂ - p| per
  n, at n = 8 and 12 in particular, beside the shortcut;
- more marked states than training had (test_ood_t) and non-optimal k in distribution (test_ood_k).

    python benchmarks/bench_llm_targets.py --config llm_sim_quick --seeds 0 1 2
    python benchmarks/bench_llm_targets.py --run runs/llm-train-<time>      # evaluate an existing run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from llm_sim.evaluate import EvalConfig, evaluate_run
from llm_sim.training import LLMTrainConfig, train_run
from qhybrid.config import resolve_config
from qhybrid.runs import atomic_write_json, create_run

KEYS = ("set_acc", "named_set", "marked_recall", "tvd", "p_marked_err")


def _ci(row: dict[str, Any], m: str) -> dict[str, Any]:
    return {m: row.get(m), f"{m}_lo": row.get(f"{m}_lo"), f"{m}_hi": row.get(f"{m}_hi")}


def _one(tables: dict, split: str, label: str, keys: tuple[str, ...] = KEYS) -> dict[str, Any]:
    rows = tables.get(split, {}).get("all", {}).get(label, [])
    return {k: v for m in keys for k, v in _ci(rows[0], m).items()} if rows else {}


def summarize(res: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    tables, curves = res["tables"], res["curves"]
    out: dict[str, Any] = {"model": meta}
    labels = ("model", "oracle_1/t", "uniform", "ceiling", "untrained")
    for split in ("test_id", "test_ood_t", "test_ood_k"):
        out[split] = {label: _one(tables, split, label) for label in labels}
    for regime in ("optimal", "non-optimal"):
        out[f"curve_{regime}"] = {
            label: {
                r["n"]: {k: v for m in KEYS for k, v in _ci(r, m).items()}
                for r in curves.get(label, {}).get(regime, [])
            }
            for label in labels
        }
    opt = out["curve_optimal"]["model"]
    non = out["curve_non-optimal"]["model"]
    unseen = [n for n in opt if n > 6]
    ind = out["test_id"]["model"]
    worst = min((opt[n]["set_acc"] for n in unseen), default=None)
    out["worst_unseen_n_set_acc"] = worst
    out["first_unseen_n_below_0.99"] = next(
        (n for n in sorted(unseen) if opt[n]["set_acc"] < 0.99), None
    )
    out["targets"] = {
        "unseen_n_7_to_60_set_acc>=0.99": worst is not None and worst >= 0.99,
        "in_distribution_set_acc>=0.99_lo>=0.97": (ind.get("set_acc") or 0) >= 0.99
        and (ind.get("set_acc_lo") or 0) >= 0.97,
        "in_distribution_tvd<=0.02": (ind.get("tvd") or 1) <= 0.02,
        "nonoptimal_k_p_err<=0.05_at_n8_and_n12": all(
            n in non and non[n]["p_marked_err"] <= 0.05 for n in (8, 12)
        ),
        "ood_t_set_acc>=0.99": (out["test_ood_t"]["model"].get("set_acc") or 0) >= 0.99,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="llm_sim_quick")
    ap.add_argument("--run", default="", help="evaluate this training run instead of training")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/llm_targets.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.run:
        run_dir = Path(args.run)
    else:
        overrides = [f"device='{args.device}'", *args.overrides]
        overrides += [f"seeds={args.seeds}"] if args.seeds is not None else []
        cfg = resolve_config(LLMTrainConfig, args.config, overrides)
        run = create_run(cfg.name, cfg, root="runs", seed=cfg.seeds[0])
        run_dir = run.path
        print(f"run: {run_dir}", flush=True)
        train_run(cfg, run_dir)
    train_s = time.perf_counter() - t0
    ev = create_run("llm-eval", root="runs")
    res = evaluate_run(
        EvalConfig(run=str(run_dir), device=args.device, bootstrap=args.bootstrap),
        ev.path,
        progress=print,
    )
    metas = [json.loads((d / "task.json").read_text()) for d in sorted(run_dir.glob("model-seed*"))]
    meta = {
        "run": str(run_dir),
        "config": args.config,
        "n_params": metas[0]["n_params"],
        "seeds": [m["seed"] for m in metas],
        "steps": metas[0].get("steps"),
        "train_seconds_per_seed": [m.get("train_seconds") for m in metas],
        "task": metas[0]["task"],
    }
    result = summarize(res, meta)
    result["eval_folder"] = str(ev.path)
    result["figure"] = res["figure"]
    result["train_wall_seconds"] = None if args.run else train_s
    result["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(args.out), result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("targets", "worst_unseen_n_set_acc", "first_unseen_n_below_0.99")
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
