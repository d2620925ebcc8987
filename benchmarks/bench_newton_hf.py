"""QNewton at its constructor defaults against SGD and Adam, to SGD's final test metric.

Tasks (``--task``, ``--hidden``): the digits MLP 64-32-10 (2,410 parameters), the digits MLP
64-1540-10 (115,510 parameters), and Friedman #1 regression with a 10-64-1 MLP (769 parameters,
test MSE instead of accuracy). Per seed (5 seeds), same split and initialisation for every method.

1. SGD (momentum 0.9, batch 256, ``--epochs`` epochs): the learning rate with the best median final
   test metric. Its final test metric on each seed is that seed's target.
2. Adam (batch 256, up to ``--max-epochs``): per learning rate, the time to the target on each
   seed. Tuned lr: most seeds reaching the target, then the smallest median wall time.
3. Timed rounds: per seed, Adam (tuned lr) and QNewton (``QNewton(model.parameters())``, batch
   ``--qnewton-batch``) run interleaved, ``--rounds`` times each in rotating order, so machine
   load hits both; each run stops at the target. A seed's time is the median over its rounds.
   When the lr fastest on the seeds it reaches is another one (it misses some), it runs in the
   same rounds too and its ratios are reported beside, over the seeds it reached.
   QNewton at batch 256 (the other methods' batch) is run once per seed as well.
4. Stability: QNewton at its defaults for ``--stability-epochs`` epochs per seed; the largest
   ratio of the epoch's training loss to its running minimum.
5. Step cost: one QNewton step over one gradient evaluation (``closure()``) of the same batch,
   medians over the steps of ``--cost-epochs`` epochs of real training, by CPU time (process
   time, one thread) and wall time; the target is judged on CPU time, because on a loaded machine
   a 10 ms step is preempted more often than the 1 ms evaluation timed next to it.

A seed on which a method misses the target is a failure on that seed. A ratio is reported only
for seeds on which both methods reached the target, and a target is met only when every seed
reached it with both and meets it: per seed, not on a median (house rule).

Targets (issue 23): defaults reach SGD's final metric on 5 of 5 seeds; QNewton's wall time to it
<= 1.5x Adam's; one step <= 12 gradient evaluations; no run whose training loss rises above 2x
its running minimum.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_newton_hf.py
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_newton_hf.py --hidden 1540
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_newton_hf.py --task friedman --hidden 64

Writes benchmarks/results/newton_hf.json, newton_hf_h1540.json or newton_hf_friedman.json (or
``--out``); the provenance (commit, dirty tree) is taken before anything is written.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from newton.errors import NonFiniteError
from newton.experiments import CompareConfig, Task, make_task, train_curve
from newton.optimizer import QNewton
from qhybrid.errors import NonFiniteLossError
from qhybrid.runs import atomic_write_json, environment_info
from qhybrid.train import Closure, make_loader, seed_everything

LR_GRIDS = {
    ("digits", "sgd"): (0.03, 0.1, 0.3, 1.0, 3.0),
    ("digits", "adam"): (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    ("friedman", "sgd"): (0.003, 0.01, 0.03, 0.1, 0.3),
    ("friedman", "adam"): (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
}


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _hit(task: Task, rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((r for r in rows if task.reached(r[task.metric], target)), None)


def _run(
    name: str, cfg: CompareConfig, task: Task, target: float | None
) -> tuple[list[dict[str, float]], Any]:
    """One run, stopped at the target; a run whose loss goes non-finite is a miss, not a crash."""
    try:
        return train_curve(name, cfg, task, stop_at=target)
    except (NonFiniteLossError, NonFiniteError) as err:  # diverged at this lr: a miss
        print(f"  {name} seed {cfg.seed}: {err}", flush=True)
        return [], None


def sgd_targets(base: CompareConfig, seeds: list[int], tasks: dict[int, Task]) -> dict[str, Any]:
    """SGD's lr grid; the chosen lr's final test metric per seed is that seed's target."""
    grid = LR_GRIDS[(base.dataset, "sgd")]
    finals: dict[float, dict[int, float]] = {}
    for lr in grid:
        finals[lr] = {}
        for s in seeds:
            rows, _ = _run("sgd", replace(base, sgd_lr=lr, seed=s), tasks[s], None)
            finals[lr][s] = rows[-1][tasks[s].metric] if rows else math.nan
    sign = 1.0 if tasks[seeds[0]].higher_is_better else -1.0

    def score(lr: float) -> float:
        vals = list(finals[lr].values())
        return -math.inf if any(math.isnan(v) for v in vals) else sign * _median(vals)

    lr = max(grid, key=score)
    print(f"SGD lr {lr}; median final {tasks[seeds[0]].metric} {sign * score(lr):.4f}", flush=True)
    return {"lr": lr, "on_edge": lr in (grid[0], grid[-1]), "targets": finals[lr], "grid": finals}


def adam_grid(
    base: CompareConfig, seeds: list[int], tasks: dict[int, Task], targets: dict[int, float]
) -> dict[str, Any]:
    """Adam's lr grid. Tuned lr: most seeds reaching the target, then the smallest median wall
    time. Also named: the lr with the smallest median over the seeds it reaches, misses aside."""
    grid = LR_GRIDS[(base.dataset, "adam")]
    table: dict[float, dict[int, float | None]] = {}
    for lr in grid:
        table[lr] = {}
        for s in seeds:
            rows, _ = _run("adam", replace(base, adam_lr=lr, seed=s), tasks[s], targets[s])
            hit = _hit(tasks[s], rows, targets[s])
            table[lr][s] = hit["wall_s"] if hit else None

    def median_reached(lr: float) -> float:
        times = [t for t in table[lr].values() if t is not None]
        return _median(times) if times else math.inf

    def n_reached(lr: float) -> int:
        return sum(t is not None for t in table[lr].values())

    lr = min(grid, key=lambda x: (-n_reached(x), median_reached(x)))
    fastest = min(grid, key=median_reached)
    print(f"Adam lr {lr} ({n_reached(lr)}/{len(seeds)} seeds); fastest {fastest}", flush=True)
    return {
        "lr": lr,
        "on_edge": lr in (grid[0], grid[-1]),
        "fastest_lr": fastest,
        "fastest_lr_seeds_reached": n_reached(fastest),
        "wall_s_to_target": table,
    }


def timed_rounds(
    base: CompareConfig,
    seeds: list[int],
    tasks: dict[int, Task],
    targets: dict[int, float],
    rounds: int,
    fast_lr: float,
) -> dict[int, dict[str, Any]]:
    """Adam (tuned lr, and the fastest-median lr when it differs) and QNewton (defaults),
    interleaved per seed, the order rotating from round to round."""
    lrs = {"adam": base.adam_lr, "adam_fast": fast_lr}
    names = ["adam", "qnewton"] + (["adam_fast"] if fast_lr != base.adam_lr else [])
    runs: dict[int, dict[str, list[dict[str, float] | None]]] = {
        s: {n: [] for n in names} for s in seeds
    }
    for r in range(rounds):
        for s in seeds:
            k = (r + s) % len(names)
            for name in names[k:] + names[:k]:
                cfg = replace(base, seed=s, adam_lr=lrs.get(name, base.adam_lr))
                rows, _ = _run(name.removesuffix("_fast"), cfg, tasks[s], targets[s])
                runs[s][name].append(_hit(tasks[s], rows, targets[s]))
        print(f"round {r + 1}/{rounds} done", flush=True)
    out: dict[int, dict[str, Any]] = {}
    for s in seeds:
        rec: dict[str, Any] = {"target": targets[s]}
        for name, hits in runs[s].items():
            ok = all(h is not None for h in hits)
            rec[f"{name}_reached"] = ok
            rec[f"{name}_epochs"] = hits[0]["epoch"] if ok and hits[0] else None
            for clock in ("wall_s", "cpu_s"):
                times = [h[clock] for h in hits if h is not None]
                rec[f"{name}_{clock}"] = _median(times) if ok else None
                rec[f"{name}_{clock}_rounds"] = times
        for adam, suffix in (("adam", ""), ("adam_fast", "_vs_fastest_lr")):
            both = rec.get(f"{adam}_reached") and rec["qnewton_reached"]
            for clock in ("wall_s", "cpu_s"):
                ratio = rec[f"qnewton_{clock}"] / rec[f"{adam}_{clock}"] if both else None
                rec[f"{clock.removesuffix('_s')}_ratio{suffix}"] = ratio
        out[s] = rec
    return out


def stability(base: CompareConfig, seeds: list[int], tasks: dict[int, Task]) -> dict[int, Any]:
    """QNewton at its defaults for ``base.epochs`` epochs: the largest loss / running minimum."""
    out = {}
    for s in seeds:
        rows, opt = _run("qnewton", replace(base, seed=s), tasks[s], None)
        losses = [r["train_loss"] for r in rows]
        rises = [v / min(losses[: i + 1]) for i, v in enumerate(losses)]
        worst = max(range(len(rises)), key=rises.__getitem__) if rises else 0
        out[s] = {
            "epochs": len(rows),
            "max_rise": max(rises) if rises else math.inf,
            "worst_epoch": worst + 1,
            "min_train_loss": min(losses) if losses else math.nan,
            "final_train_loss": losses[-1] if losses else math.nan,
            "rejected_steps": sum(h["rejected"] for h in opt.history) if opt else None,
            "fallback_steps": sum(h["fallback"] for h in opt.history) if opt else None,
            "final_damping": opt.param_groups[0]["damping"] if opt else None,
        }
        print(f"stability seed {s}: max rise {out[s]['max_rise']:.3f}", flush=True)
    return out


def step_cost(base: CompareConfig, task: Task, epochs: int) -> dict[str, float]:
    """Median time of ``opt.step(closure)`` over that of ``closure()`` on the same batch, during
    ``epochs`` epochs of training at the defaults (wall and CPU clocks)."""
    from newton.experiments import _mlp

    x_tr = task.train.tensors[0]
    seed_everything(base.seed)
    model = _mlp(x_tr.shape[1], base.hidden, task.d_out)
    opt = QNewton(model.parameters())
    loader = make_loader(task.train, base.qnewton_batch_size, seed=base.seed)
    times: dict[str, list[float]] = {
        "grad_wall": [],
        "grad_cpu": [],
        "step_wall": [],
        "step_cpu": [],
    }
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        for batch in loader:
            if len(batch[0]) < base.qnewton_batch_size:
                continue  # the short last batch: not "the same batch size"
            closure = Closure(model, [batch], task.loss_fn)
            for what, fn in (("grad", closure), ("step", lambda c=closure: opt.step(c))):
                w, c = time.perf_counter(), time.process_time()
                fn()
                times[f"{what}_wall"].append(time.perf_counter() - w)
                times[f"{what}_cpu"].append(time.process_time() - c)
    med = {k: _median(v) for k, v in times.items()}
    hist = opt.history
    return {
        "steps": len(times["step_wall"]),
        "batch": base.qnewton_batch_size,
        "step_ms_wall": 1e3 * med["step_wall"],
        "grad_eval_ms_wall": 1e3 * med["grad_wall"],
        "step_in_grad_evals_wall": med["step_wall"] / med["grad_wall"],
        "step_in_grad_evals_cpu": med["step_cpu"] / med["grad_cpu"],
        "ggn_products_per_step": _median([h["matvecs"] for h in hist]),
        "cg_iterations_per_step": _median([h["cg_iterations"] for h in hist]),
        "line_search_evals_per_step": _median([h["line_search_evals"] for h in hist]),
    }


def loader_ms_per_epoch(task: Task, batch_sizes: tuple[int, ...]) -> dict[int, float]:
    """Wall time of one pass over the shared loop's loader alone (it is in every method's time)."""
    out = {}
    for b in batch_sizes:
        loader = make_loader(task.train, b, seed=0)
        t = time.perf_counter()
        for epoch in range(5):
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            for _ in loader:
                pass
        out[b] = 1e3 * (time.perf_counter() - t) / 5
    return out


def summarise(
    per_seed: dict[int, dict[str, Any]],
    at_256: dict[int, bool],
    stab: dict[int, Any],
    cost: dict[str, float],
) -> dict[str, Any]:
    """Per-seed rule: a target is met only if every seed meets it (no medians of infinities)."""
    seeds = sorted(per_seed)
    both = [s for s in seeds if per_seed[s]["wall_ratio"] is not None]
    out: dict[str, Any] = {"seeds": seeds, "seeds_both_reached": both}
    for clock in ("wall", "cpu", "wall_vs_fastest_lr"):
        key = f"{clock}_ratio" if "_vs_" not in clock else "wall_ratio_vs_fastest_lr"
        got = {s: per_seed[s].get(key) for s in seeds}
        ratios = [v for v in got.values() if v is not None]
        out[f"{key}_per_seed"] = got
        out[f"{key}_seeds"] = [s for s in seeds if got[s] is not None]
        out[f"{key}_worst"] = max(ratios) if ratios else None
        out[f"{key}_median"] = _median(ratios) if ratios else None
        out[f"{key}_mean"] = statistics.mean(ratios) if ratios else None
    out["qnewton_defaults_reached"] = sum(per_seed[s]["qnewton_reached"] for s in seeds)
    out["qnewton_defaults_reached_batch_256"] = sum(at_256.values())
    out["adam_reached"] = sum(per_seed[s]["adam_reached"] for s in seeds)
    out["max_loss_rise"] = max(v["max_rise"] for v in stab.values())
    all_both = len(both) == len(seeds)
    out["targets"] = {
        "defaults_reach_sgd_on_every_seed": out["qnewton_defaults_reached"] == len(seeds),
        "defaults_reach_sgd_on_every_seed_batch_256": all(at_256.values()),
        "wall_le_1.5x_adam_on_every_seed": all_both and out["wall_ratio_worst"] <= 1.5,
        # CPU clock: under load a 10 ms step is preempted more often than a 1 ms gradient
        # evaluation, so the wall ratio overstates the step's cost (both are in the JSON)
        "step_le_12_grad_evals_cpu": cost["step_in_grad_evals_cpu"] <= 12,
        "no_late_rise_above_2x": out["max_loss_rise"] <= 2.0,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("digits", "friedman"), default="digits")
    ap.add_argument("--hidden", type=int, default=32, help="1540 gives 115,510 parameters")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20, help="SGD's budget (sets the target)")
    ap.add_argument("--max-epochs", type=int, default=40, help="Adam's and QNewton's budget")
    ap.add_argument("--qnewton-batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stability-epochs", type=int, default=100)
    ap.add_argument("--cost-epochs", type=int, default=10)
    ap.add_argument("--out", default="", help="JSON path (default: benchmarks/results/...)")
    args = ap.parse_args()
    env = environment_info(0)  # provenance before anything is written
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    load_start = os.getloadavg()[0]
    seeds = list(range(args.seeds))
    base = CompareConfig(
        dataset=args.task,
        hidden=args.hidden,
        epochs=args.epochs,
        qnewton_batch_size=args.qnewton_batch,
        optimizers=("sgd",),
    )
    tasks = {s: make_task(replace(base, seed=s)) for s in seeds}
    sgd = sgd_targets(base, seeds, tasks)
    targets = sgd["targets"]
    longer = replace(base, epochs=args.max_epochs)
    adam = adam_grid(longer, seeds, tasks, targets)
    tuned = replace(longer, adam_lr=adam["lr"])
    per_seed = timed_rounds(tuned, seeds, tasks, targets, args.rounds, adam["fastest_lr"])
    at_256 = {}
    for s in seeds:
        cfg = replace(tuned, seed=s, qnewton_batch_size=256)
        rows, _ = _run("qnewton", cfg, tasks[s], targets[s])
        at_256[s] = _hit(tasks[s], rows, targets[s]) is not None
    stab = stability(replace(base, epochs=args.stability_epochs), seeds, tasks)
    cost = step_cost(base, tasks[0], args.cost_epochs)
    print("step cost", cost, flush=True)
    summary = summarise(per_seed, at_256, stab, cost)
    print(summary, flush=True)
    name = "newton_hf" if args.task == "digits" and args.hidden == 32 else None
    name = name or (f"newton_hf_h{args.hidden}" if args.task == "digits" else "newton_hf_friedman")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"{name}.json"
    n_in, n_out = tasks[0].train.tensors[0].shape[1], tasks[0].d_out
    atomic_write_json(
        out,
        {
            "task": args.task,
            "metric": tasks[0].metric,
            "parameters": (n_in + 1) * args.hidden + (args.hidden + 1) * n_out,
            "summary": summary,
            "per_seed": per_seed,
            "qnewton_defaults_reached_at_batch_256": at_256,
            "stability": stab,
            "step_cost": cost,
            "sgd": sgd,
            "adam": adam,
            "qnewton_settings": "QNewton(model.parameters()): constructor defaults",
            "args": vars(args),
            "loader_ms_per_epoch": loader_ms_per_epoch(tasks[0], (256, args.qnewton_batch)),
            "machine_load_1min": {"start": load_start, "end": os.getloadavg()[0]},
            "total_s": time.perf_counter() - t_all,
            "env": env,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
