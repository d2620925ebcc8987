"""The issue's accuracy targets: train on n <= 6, evaluate in distribution, for n up to 20 and non-optimal k.

Trains one model per seed with ``qhybrid llm train`` settings from a TOML file, evaluates with
``qhybrid llm eval`` and writes the target numbers beside the baselines:

- in distribution (test_id, n = 3-6, unseen marked sets, optimal k): set accuracy and TVD;
- qubit extrapolation (test_ood_n): set accuracy per n and the first n where it drops below 0.9;
- non-optimal k (test_ood_k): mean |p_pred - p_true| on marked states, against the p = 1/t shortcut.

    python benchmarks/bench_llm_targets.py --config configs/llm_sim_quick.toml [--seeds 0 1 2] [--device cuda]
    python benchmarks/bench_llm_targets.py --run runs/llm-train-<time>      # evaluate an existing run only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llm_sim.evaluate import EvalConfig, evaluate_run
from llm_sim.training import LLMTrainConfig, train_run
from qhybrid.config import resolve_config
from qhybrid.runs import atomic_write_json, create_run


def summarize(tables: dict, meta: dict) -> dict:
    def row(split: str, by: str, label: str) -> list[dict]:
        return tables.get(split, {}).get(by, {}).get(label, [])

    out: dict = {"model": meta}
    for label in ("model", "oracle_1/t", "ceiling", "uniform", "untrained"):
        r = row("test_id", "all", label)
        if r:
            out.setdefault("in_distribution", {})[label] = {
                k: r[0].get(k)
                for k in (
                    "set_acc",
                    "set_acc_lo",
                    "set_acc_hi",
                    "tvd",
                    "tvd_lo",
                    "tvd_hi",
                    "parsed",
                )
            }
        r = row("test_ood_k", "all", label)
        if r:
            out.setdefault("nonoptimal_k", {})[label] = {
                k: r[0].get(k)
                for k in ("p_marked_err", "p_marked_err_lo", "p_marked_err_hi", "tvd")
            }
    curve = {
        r["n"]: r["set_acc"] for r in row("test_id", "n", "model") + row("test_ood_n", "n", "model")
    }
    out["extrapolation_set_acc_by_n"] = curve
    ood = {r["n"] for r in row("test_ood_n", "n", "model")}
    below = [n for n in sorted(ood) if curve[n] < 0.9]
    out["first_ood_n_below_0.9"] = below[0] if below else None
    ind, k = (
        out.get("in_distribution", {}).get("model", {}),
        out.get("nonoptimal_k", {}).get("model", {}),
    )
    out["targets"] = {
        "in_distribution_set_acc>=0.99": (ind.get("set_acc") or 0) >= 0.99,
        "in_distribution_tvd<=0.02": (ind.get("tvd") or 1) <= 0.02,
        "n12_set_acc>=0.9": (curve.get(12) or 0) >= 0.9,
        "nonoptimal_k_p_err<=0.05": (k.get("p_marked_err") or 1) <= 0.05,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/llm_sim_quick.toml")
    ap.add_argument("--run", default="", help="evaluate this training run instead of training")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results/llm_targets.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.run:
        run_dir = Path(args.run)
    else:
        overrides = [f"device='{args.device}'"] + (
            [f"seeds={args.seeds}"] if args.seeds is not None else []
        )
        cfg = resolve_config(LLMTrainConfig, args.config, overrides)
        run = create_run(cfg.name, cfg, root="runs", seed=cfg.seeds[0])
        run_dir = run.path
        train_run(cfg, run_dir, progress=False)
    train_s = time.perf_counter() - t0
    ev = create_run("llm-eval", root="runs")
    res = evaluate_run(EvalConfig(run=str(run_dir), device=args.device), ev.path)
    metas = [json.loads((d / "task.json").read_text()) for d in sorted(run_dir.glob("model-seed*"))]
    meta = {"run": str(run_dir), "n_params": metas[0]["n_params"], "seeds": [m["seed"] for m in metas],
            "train_seconds_per_seed": [m.get("train_seconds") for m in metas],
            "steps": metas[0].get("steps"), "task": metas[0]["task"]}  # fmt: skip
    result = summarize(res["tables"], meta)
    result["eval_folder"] = str(ev.path)
    result["wall_seconds"] = time.perf_counter() - t0 if not args.run else None
    result["train_wall_seconds"] = train_s if not args.run else None
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
