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
    python benchmarks/bench_llm_targets.py --seeds 0 1 2 --jobs 3 --device cpu  # one process per seed
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
from qhybrid.runs import create_run, write_results

KEYS = ("tvd_raw", "sa_0.3", "p_marked_err", "set_acc", "named_set", "marked_recall", "parsed")
DEPENDS = ("llm_sim", "quantum", "qhybrid/train.py")


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    return sum(float(r[key]) for r in records) / len(records) if records else None


def per_seed(records: list[dict[str, Any]], trained_max_n: int) -> dict[str, Any]:
    """One seed's numbers: every split's means, and per unseen n at the optimal and other k."""
    out: dict[str, Any] = {}
    for split in ("test_id", "test_ood_t", "test_ood_k"):
        rs = [r for r in records if r["split"] == split]
        out[split] = {k: _mean(rs, k) for k in KEYS}
    for regime in ("optimal", "non-optimal"):
        rows: dict[int, dict[str, Any]] = {}
        for r in records:
            if r["split"] in ("test_id", "test_ood_n") and (r["k_regime"] == "optimal") == (
                regime == "optimal"
            ):
                rows.setdefault(r["n"], []).append(r)  # type: ignore[arg-type]
        out[f"by_n_{regime}"] = {
            n: {k: _mean(rs, k) for k in KEYS} | {"problems": len(rs)}
            for n, rs in sorted(rows.items())  # type: ignore[arg-type]
        }
    return out


def judge(seed: dict[str, Any], base: dict[str, Any], trained_max_n: int) -> dict[str, bool]:
    """The issue's targets for one seed (base: the rule's and the ceiling's curves per n)."""
    opt = {n: v for n, v in seed["by_n_optimal"].items() if n > trained_max_n}
    non = seed["by_n_non-optimal"]
    rule, ceil = base["oracle_1/t"]["optimal"], base["ceiling"]["optimal"]
    return {
        "unseen_n_named_set>=0.99_every_n": all(v["named_set"] >= 0.99 for v in opt.values()),
        "unseen_n_tvd<=rule+0.01_every_n": all(
            v["tvd_raw"] <= rule[n]["tvd_raw"] + 0.01 for n, v in opt.items()
        ),
        "unseen_n_sa>=ceiling-0.02_every_n": all(
            v["sa_0.3"] >= ceil[n]["sa_0.3"] - 0.02 for n, v in opt.items()
        ),
        "nonoptimal_p_err<=0.05_at_n8_and_n12": all(
            n in non and non[n]["p_marked_err"] <= 0.05 for n in (8, 12)
        ),
        "in_distribution_set_acc>=0.99": (seed["test_id"]["set_acc"] or 0) >= 0.99,
        "in_distribution_tvd<=0.02": (seed["test_id"]["tvd_raw"] or 1) <= 0.02,
    }


def format_bound(ns: range = range(7, 61)) -> dict[int, dict[str, float]]:
    """What the ``compact_scaled`` window allows, computed (no model): a predictor that knows the
    n = 6 (even n) or n = 5 (odd n) answer exactly for the register's window and ignores the low bits.

    Per n, over t = 1..6: mean |p̂ - p| per marked state at k in {0, k*/2, k*+1, 2k*}, and at k*
    the mean TVD of that predictor and of the p = 1/t rule (TVD = |P̂ - P| and 1 - P: two-level
    distributions whose marked states are named right).
    """
    import math

    def success(n: int, t: int, k: int) -> float:
        return math.sin((2 * k + 1) * math.asin(math.sqrt(t / 2**n))) ** 2

    def predicted(n: int, t: int, k: int) -> float:
        ref = 6 if n % 2 == 0 else 5
        return success(ref, t, k >> ((n + 1) // 2 - (ref + 1) // 2))

    out = {}
    for n in ns:
        errs, tvd, rule = [], [], []
        for t in range(1, 7):
            ks = math.floor(math.pi / 4 * math.sqrt(2**n / t))
            errs += [
                abs(predicted(n, t, k) - success(n, t, k)) / t for k in (0, ks // 2, ks + 1, 2 * ks)
            ]
            tvd.append(abs(predicted(n, t, ks) - success(n, t, ks)))
            rule.append(1 - success(n, t, ks))
        out[n] = {
            "p_err_nonoptimal": sum(errs) / len(errs),
            "tvd_optimal": sum(tvd) / len(tvd),
            "tvd_optimal_rule": sum(rule) / len(rule),
        }
    return out


def summarize(res: dict[str, Any], meta: dict[str, Any], trained_max_n: int) -> dict[str, Any]:
    """Per-seed numbers and targets (a target is met only if every seed meets it) and the
    baselines' curves per n."""
    base = {
        label: {
            regime: {r["n"]: {k: r.get(k) for k in KEYS} for r in res["curves"][label][regime]}
            for regime in ("optimal", "non-optimal")
        }
        for label in ("oracle_1/t", "ceiling", "uniform")
        if label in res["curves"]
    }
    seeds = {
        name: per_seed(recs, trained_max_n)
        for name, recs in zip(meta["seed_names"], res["records"]["model"], strict=True)
    }
    targets = {name: judge(s, base, trained_max_n) for name, s in seeds.items()}
    met = {t: all(v[t] for v in targets.values()) for t in next(iter(targets.values()))}
    return {
        "model": meta,
        "seeds": seeds,
        "baselines": base,
        "targets_per_seed": targets,
        "targets": met,
    }


def _train_seed(cfg: LLMTrainConfig, run_dir: Path, seed: int) -> None:
    """One seed in its own process, one thread (the same weights as a one-thread serial run)."""
    import torch

    from llm_sim.training import read_splits, train_model

    torch.set_num_threads(1)
    splits = read_splits(run_dir / "splits.json")
    train_model(cfg, run_dir, seed=seed, splits=splits)


def train_parallel(cfg: LLMTrainConfig, run_dir: Path, jobs: int) -> None:
    """Train ``cfg.seeds`` in ``jobs`` processes into one run folder (shared splits), then load all."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from llm_sim.training import load_splits, write_splits

    write_splits(run_dir / "splits.json", load_splits(cfg))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        for done in [pool.submit(_train_seed, cfg, run_dir, s) for s in cfg.seeds]:
            done.result()
    train_run(cfg, run_dir, resume=True)  # every seed finished: loads them


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="llm_sim_quick")
    ap.add_argument("--run", default="", help="evaluate this training run instead of training")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1, help="train the seeds in this many processes")
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
        if args.jobs > 1:
            train_parallel(cfg, run_dir, args.jobs)
        else:
            train_run(cfg, run_dir)
    train_s = time.perf_counter() - t0
    ev = create_run("llm-eval", root="runs")
    res = evaluate_run(
        EvalConfig(run=str(run_dir), device=args.device, bootstrap=args.bootstrap),
        ev.path,
        progress=print,
    )
    dirs = sorted(run_dir.glob("model-seed*"))
    metas = [json.loads((d / "task.json").read_text()) for d in dirs]
    meta = {
        "seed_names": [d.name for d in dirs],
        "run": str(run_dir),
        "config": args.config,
        "n_params": metas[0]["n_params"],
        "seeds": [m["seed"] for m in metas],
        "steps": metas[0].get("steps"),
        "train_seconds_per_seed": [m.get("train_seconds") for m in metas],
        "train_processes": args.jobs,
        "task": metas[0]["task"],
    }
    from llm_sim.training import read_splits

    trained_max_n = max(p.n_qubits for p in read_splits(run_dir / "splits.json")["train"])
    result = summarize(res, meta, trained_max_n)
    result["eval_folder"] = str(ev.path)
    result["figure"] = res["figure"]
    result["train_wall_seconds"] = None if args.run else train_s
    result["wall_seconds"] = time.perf_counter() - t0
    write_results(Path(args.out), result, depends=DEPENDS)
    print(json.dumps({k: result[k] for k in ("targets", "targets_per_seed")}, indent=1))


if __name__ == "__main__":
    main()
