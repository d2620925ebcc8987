"""The Newton experiments behind ``qhybrid newton ...`` and the reproduce stage.

1. :func:`compare_optimizers`: an MLP on digits (or local MNIST) trained with QNewton, SGD and Adam
   through :func:`qhybrid.train.train`; loss and accuracy per epoch and against wall time, epochs
   to SGD's final accuracy, wall time to a target loss, kappa over training.
2. :func:`hhl_in_the_loop`: a 16-parameter softmax regression trained with every Newton solve run
   by HHL on Aer, against the same steps with exact (Cholesky) solves.
3. :func:`crossover_curves`: the smallest N where the quantum solve is predicted to win, against
   kappa and gate time, with and without I/O, and Q-Newton's paper-mode threshold.
4. :func:`noise_robustness`: training with solve errors of relative size epsilon injected by the
   modelled quantum solver; the slowdown to a target loss.

Each returns plain dicts (rows for tables, series for figures); ``plot_*`` functions draw them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Interval, MaxLen, MinLen
from torch import nn

from newton.cost import (
    ClassicalCostModel,
    QuantumCostModel,
    QueryModel,
    crossover_size,
    paper_mode_costs,
)
from newton.data import digits_datasets, friedman_datasets, load_mnist
from newton.errors import BadValueError
from newton.optimizer import Method, QNewton, check_settings
from newton.scheduler import Scheduler, SchedulerConfig
from newton.values import (
    DEFAULT_MAX_CPU_S,
    DEFAULT_MAX_MEMORY_GB,
    FLOPS,
    ClockQubits,
    Count,
    CpuSeconds,
    Damping,
    Epsilon,
    Fraction,
    Kappa,
    KappaTargetOrOff,
    LearningRate,
    MemoryGB,
    NonNegative,
    NonNegativeCount,
    Positive,
    PriorExamples,
    Seed,
    ShotsOrZero,
    Tolerance,
    check_declared,
    check_work,
    mlp_parameters,
)
from qhybrid.config import Unique
from qhybrid.train import TrainConfig, make_loader, seed_everything, train

logger = logging.getLogger(__name__)

__all__ = [
    "CompareConfig",
    "Task",
    "CrossoverConfig",
    "HHLLoopConfig",
    "NoiseConfig",
    "compare_optimizers",
    "make_task",
    "train_curve",
    "crossover_curves",
    "hhl_in_the_loop",
    "noise_robustness",
]


def _ce(model: nn.Module, batch: Any) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _mse(model: nn.Module, batch: Any) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))


QNEWTON_SETTINGS = ("damping", "damping_floor", "curvature_batch", "cg_max_iter", "cg_tol", "lr")
Dataset = Literal["digits", "friedman", "mnist"]
OptimizerName = Literal["qnewton", "sgd", "adam"]
# (training examples before the test split, inputs, outputs) of each dataset; MNIST: IDX files
DATASET_SHAPES: dict[Dataset, tuple[int, int, int]] = {
    "digits": (1797, 64, 10),
    "friedman": (2000, 10, 1),
    "mnist": (60_000, 784, 10),
}
STEP_OVERHEAD_S = {"qnewton": 5e-3, "sgd": 5e-4, "adam": 5e-4}  # Python time per step (measured)


@dataclass(frozen=True)
class CompareConfig:
    """QNewton vs SGD vs Adam on an MLP (a classifier, or a regressor on Friedman #1)."""

    dataset: Dataset = "digits"  # "digits", "friedman" (regression) or "mnist" (local IDX files)
    mnist_dir: Annotated[str, MaxLen(4096)] = (
        ""  # folder of the four MNIST IDX files (dataset mnist)
    )
    max_train: NonNegativeCount = 0  # MNIST: use only this many training images (0 = all)
    hidden: Count = 32  # MLP hidden width
    epochs: Count = 6  # passes over the training set
    batch_size: Count = 256  # examples per step (SGD and Adam; QNewton too unless set below)
    qnewton_batch_size: NonNegativeCount = 512  # examples per QNewton step; 0 = batch_size
    # QNewton settings; None = QNewton's constructor default (docs/newton.md, "Defaults")
    damping: Damping | None = None  # initial Levenberg-Marquardt damping
    damping_floor: PriorExamples | None = None  # damping floor, in examples of the curvature scale
    curvature_batch: Count | None = None  # examples per step used for the GGN
    cg_max_iter: Count | None = None  # Hessian-free CG iterations per step at most
    cg_tol: Tolerance | None = None  # Hessian-free CG relative residual to stop at
    lr: LearningRate | None = None  # step scale before the line search
    kappa_target: KappaTargetOrOff = 0.0  # QNewton kappa-targeted damping (blocks); 0 = off
    method: Method = "auto"  # QNewton: auto | hessian_free | blocks
    sgd_lr: LearningRate = 1.0  # best final test accuracy on digits 64-32-10 (bench_newton_hf)
    sgd_momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    adam_lr: LearningRate = (
        0.03  # tuned on digits 64-32-10 (bench_newton_hf: every seed reaches it)
    )
    target_loss: NonNegative = 0.3  # train loss whose first crossing gives "wall time to target"
    test_fraction: Fraction = 0.2  # digits, friedman: held-out share
    optimizers: Annotated[tuple[OptimizerName, ...], MinLen(1), Unique] = (
        "qnewton",
        "sgd",
        "adam",
    )  # which to run, each once
    seed: Seed = 0
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse runs estimated above (CPU-core s)
    max_memory_gb: MemoryGB = DEFAULT_MAX_MEMORY_GB  # refuse runs estimated above (GB)

    def __post_init__(self) -> None:
        check_declared(self)
        if 0 < self.kappa_target <= 1:
            raise BadValueError(f"'kappa_target' = {self.kappa_target} must be 0 (off) or > 1")
        if self.dataset == "mnist" and not self.mnist_dir:
            raise BadValueError('dataset="mnist" needs mnist_dir="..." (a folder of IDX files)')
        if self.dataset != "mnist" and (self.mnist_dir or self.max_train):
            raise BadValueError(
                f"mnist_dir and max_train read MNIST, but dataset={self.dataset!r}; add "
                '--set dataset="mnist" or drop them'
            )
        check_settings(self.qnewton_settings())
        seconds, gigabytes = self.work()
        check_work(
            seconds,
            gigabytes,
            max_cpu_s=self.max_cpu_s,
            max_memory_gb=self.max_memory_gb,
            what="this comparison",
            drivers=f"optimizers={list(self.optimizers)} x epochs={self.epochs} x "
            f"{self.train_examples():,} {self.dataset} examples x "
            f"{self.parameters():,} parameters (hidden={self.hidden})",
        )

    def qnewton_settings(self) -> dict[str, Any]:
        """The QNewton keyword arguments this config sets (the rest keep their defaults)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in QNEWTON_SETTINGS}
        out = {k: v for k, v in out.items() if v is not None}
        if self.kappa_target:
            out["kappa_target"] = self.kappa_target
        return {**out, "method": self.method}

    def train_examples(self) -> int:
        """Training examples of the dataset (MNIST: as declared, before the files are read)."""
        total, _, _ = DATASET_SHAPES[self.dataset]
        if self.dataset == "mnist":
            return min(total, self.max_train) if self.max_train else total
        return total - math.ceil(total * self.test_fraction)

    def parameters(self) -> int:
        """Parameters of the MLP."""
        _, d_in, d_out = DATASET_SHAPES[self.dataset]
        return mlp_parameters(d_in, self.hidden, d_out)

    def work(self) -> tuple[float, float]:
        """Estimated (CPU-core seconds, GB) of the comparison (docs/newton.md#work-caps).

        Per example and parameter a gradient costs 6 flops (forward and backward); a QNewton step
        adds one GGN product per CG iteration and the line search's evaluations, about
        ``cg_max_iter + 2`` gradients, and on block steps ``5 P^2`` flops per curvature example
        for the dense blocks; each step also costs a fixed Python overhead. Measured on the
        defaults (digits, hidden 32): 0.28 s against 0.5 s estimated; one epoch of block steps
        2.6 s against 9 s.
        """
        n, p = self.train_examples(), self.parameters()
        _, d_in, _ = DATASET_SHAPES[self.dataset]
        flops, seconds = 0.0, 0.0
        for name in self.optimizers:
            batch = self.batch_size
            if name == "qnewton" and self.qnewton_batch_size:
                batch = self.qnewton_batch_size
            steps = self.epochs * math.ceil(n / batch)
            per_example = 6.0 * p
            if name == "qnewton":
                per_example *= (self.cg_max_iter or 10) + 2
                if self.method == "blocks" or self.kappa_target:
                    per_example += 5.0 * p * p * min(1.0, (self.curvature_batch or batch) / batch)
            flops += per_example * self.epochs * n + 4.0 * p * n * self.epochs  # + evaluation
            seconds += steps * STEP_OVERHEAD_S[name]
        batch = max(self.batch_size, self.qnewton_batch_size)
        data = (n + DATASET_SHAPES[self.dataset][0] // 6) * (d_in + 1) * 4
        memory = data + 40 * p * 4 + 8 * batch * (self.hidden + d_in) * 4
        if self.method == "blocks" or self.kappa_target:
            memory += 8 * min(p, 2048) ** 2 * 3
        return seconds + flops / FLOPS, memory / 1e9


@dataclass(frozen=True)
class Task:
    """A dataset with its loss and test metric (``test_acc``: higher is better; ``test_mse``: lower)."""

    train: Any
    test: Any
    loss_fn: Any
    metric: str
    d_out: int

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric is better (accuracy) rather than smaller (MSE)."""
        return self.metric == "test_acc"

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` of the metric is at least as good as ``target``."""
        return value >= target - 1e-9 if self.higher_is_better else value <= target + 1e-12


def make_task(cfg: CompareConfig) -> Task:
    """The config's dataset, loss and metric."""
    if cfg.dataset == "friedman":
        train_ds, test_ds = friedman_datasets(cfg.test_fraction, cfg.seed)
        return Task(train_ds, test_ds, _mse, "test_mse", 1)
    if cfg.dataset == "mnist":
        train_ds, test_ds = load_mnist(cfg.mnist_dir, max_train=cfg.max_train)
    else:
        train_ds, test_ds = digits_datasets(cfg.test_fraction, cfg.seed)
    y_tr, y_te = train_ds.tensors[1], test_ds.tensors[1]
    return Task(train_ds, test_ds, _ce, "test_acc", int(max(y_tr.max(), y_te.max())) + 1)


def _make_optimizer(
    name: OptimizerName, model: nn.Module, cfg: CompareConfig
) -> torch.optim.Optimizer:
    if name == "qnewton":
        return QNewton(model.parameters(), **cfg.qnewton_settings())
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.sgd_lr, momentum=cfg.sgd_momentum)
    return torch.optim.Adam(model.parameters(), lr=cfg.adam_lr)


def train_curve(
    name: OptimizerName, cfg: CompareConfig, task: Task, *, stop_at: float | None = None
) -> tuple[list[dict[str, float]], Any]:
    """Train one optimizer; per epoch the train loss, test loss and metric, and the training
    time so far (wall and process CPU, evaluation excluded). Returns (rows, optimizer).

    ``stop_at``: stop at the first epoch whose test metric reaches this target (or after
    ``cfg.epochs``), through the loop's early stopping on a countdown that stops improving there.
    """
    x_tr, y_tr = task.train.tensors
    x_te, y_te = task.test.tensors
    seed_everything(cfg.seed)
    model = _mlp(x_tr.shape[1], cfg.hidden, task.d_out)
    opt = _make_optimizer(name, model, cfg)
    batch_size = cfg.batch_size
    if name == "qnewton" and cfg.qnewton_batch_size:
        batch_size = cfg.qnewton_batch_size
    steps_per_epoch = math.ceil(len(task.train) / batch_size)
    clock = {"start": time.perf_counter(), "eval_s": 0.0}
    cpu = {"start": time.process_time(), "eval_s": 0.0}
    rows: list[dict[str, float]] = []

    def eval_fn(m: nn.Module) -> dict[str, float]:
        t, c = time.perf_counter(), time.process_time()
        le = m(x_te)
        rec = {
            "train_loss": float(task.loss_fn(m, (x_tr, y_tr))),
            "test_loss": float(task.loss_fn(m, (x_te, y_te))),
        }
        if task.metric == "test_acc":
            rec["test_acc"] = float((le.argmax(-1) == y_te).float().mean())
        else:
            rec["test_mse"] = rec["test_loss"]
        rec["wall_s"] = t - clock["start"] - clock["eval_s"]  # training time only
        rec["cpu_s"] = c - cpu["start"] - cpu["eval_s"]  # CPU time of this process
        rec["epoch"] = len(rows) + 1
        rows.append(rec)
        clock["eval_s"] += time.perf_counter() - t
        cpu["eval_s"] += time.process_time() - c
        done = stop_at is not None and task.reached(rec[task.metric], stop_at)
        return {**rec, "until_target": math.inf if done else -rec["epoch"]}

    train(
        model,
        make_loader(task.train, batch_size, seed=cfg.seed),
        task.loss_fn,
        opt,
        TrainConfig(
            max_steps=cfg.epochs * steps_per_epoch,
            max_epochs=cfg.epochs,
            eval_every=steps_per_epoch,
            clip_grad_norm=None,
            progress=False,
            seed=cfg.seed,
            device="cpu",
            log_every=steps_per_epoch,
            early_stop_metric="until_target" if stop_at is not None else None,
            early_stop_patience=1 if stop_at is not None else 0,
        ),
        eval_fn=eval_fn,
    )
    return rows, opt


def _step_records(opt: QNewton) -> list[dict[str, Any]]:
    """Per QNewton step: kappa (None, valid JSON, for Hessian-free steps), damping, CG, outcome."""
    out = []
    for i, h in enumerate(opt.history):
        kappas = ("kappa_max", "kappa_median", "kappa_undamped_max")
        out.append(
            {
                "step": i + 1,
                **{k: h[k] if math.isfinite(h[k]) else None for k in kappas},
                "damping": h["damping"],
                "cg_iterations": h["cg_iterations"],
                "fallback": float(h["fallback"]),
                "rejected": float(h["rejected"]),
            }
        )
    return out


def compare_optimizers(cfg: CompareConfig, task: Task | None = None) -> dict[str, Any]:
    """Train the same MLP with each optimizer; per-epoch curves and the summary table.

    ``task``: the config's dataset when already loaded (:func:`make_task`), else loaded here.
    """
    task = task if task is not None else make_task(cfg)
    curves: dict[str, list[dict[str, float]]] = {}
    kappa: list[dict[str, Any]] = []
    for name in cfg.optimizers:
        curves[name], opt = train_curve(name, cfg, task)
        if isinstance(opt, QNewton):
            kappa = _step_records(opt)
    summary = []
    sgd_final = curves["sgd"][-1][task.metric] if "sgd" in curves else None
    for label, rows in curves.items():
        hit = [r for r in rows if r["train_loss"] <= cfg.target_loss]
        reach = [
            r for r in rows if sgd_final is not None and task.reached(r[task.metric], sgd_final)
        ]
        summary.append(
            {
                "optimizer": label,
                f"final_{task.metric}": rows[-1][task.metric],
                "final_train_loss": rows[-1]["train_loss"],
                "epochs_to_sgd_final": reach[0]["epoch"] if reach else None,
                "wall_s_to_sgd_final": reach[0]["wall_s"] if reach else None,
                f"wall_s_to_loss_{cfg.target_loss:g}": hit[0]["wall_s"] if hit else None,
                "epochs_to_target_loss": hit[0]["epoch"] if hit else None,
                "train_wall_s": rows[-1]["wall_s"],
            }
        )
    return {"curves": curves, "summary": summary, "kappa": kappa, "metric": task.metric}


Digit = Annotated[int, Interval(ge=0, le=9)]


def hhl_solve_seconds(n: int, clock_qubits: int, shots: int = 0) -> float:
    """Estimated seconds of one ``hhl_solve`` of an ``n x n`` system (docs/newton.md#work-caps):
    circuit construction and transpilation (0.05 s at 6 clock qubits, doubling per qubit), the
    state-vector simulation of ``2^(2t + n_qubits + 2)`` amplitude updates (the uniformly
    controlled rotation on the clock dominates), and the sampling of ``n + 1`` circuits."""
    qubits = max(1, math.ceil(math.log2(max(n, 2))))
    build = 0.05 * 2.0 ** max(0, clock_qubits - 6)  # measured: 0.05 s at t = 6, 0.4 s at t = 9
    sweep = 2.0 ** (2 * clock_qubits + qubits + 2) * 10 / FLOPS
    return build + sweep + (qubits + 1) * shots * 2e-6


@dataclass(frozen=True)
class HHLLoopConfig:
    """Softmax regression with at most 16 parameters; every solve by HHL on Aer."""

    classes: Annotated[tuple[Digit, ...], MinLen(2), Unique] = (
        3,
        8,
    )  # digit classes (a hard pair: a finite optimum)
    features: Annotated[int, Interval(ge=1, le=7)] = (
        7  # PCA features; (features + 1) x classes <= 16
    )
    steps: Count = 8  # full-batch Newton steps
    damping: Damping = 1e-3  # initial LM damping
    clock_qubits: ClockQubits = 6  # HHL phase-estimation qubits
    # damping keeps kappa <= this in both runs (exact and HHL alike); 0 = what the clock resolves
    kappa_target: KappaTargetOrOff = 0.0
    shots: ShotsOrZero = 0  # 0 = Aer statevector read-out; else shots per circuit
    seed: Seed = 0
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse runs estimated above (CPU-core s)

    def __post_init__(self) -> None:
        check_declared(self)
        if (self.features + 1) * len(self.classes) > 16:
            raise BadValueError(
                f"(features + 1) * classes = {(self.features + 1) * len(self.classes)} > 16 "
                "parameters: HHL simulation takes N <= 16; lower features"
            )
        if 0 < self.kappa_target <= 1:
            raise BadValueError(f"'kappa_target' = {self.kappa_target} must be 0 (auto) or > 1")
        n = (self.features + 1) * len(self.classes)
        seconds = 2 * self.steps * hhl_solve_seconds(n, self.clock_qubits, self.shots)
        check_work(
            seconds,
            0.0,
            max_cpu_s=self.max_cpu_s,
            max_memory_gb=math.inf,
            what="this HHL-in-the-loop run",
            drivers=f"2 runs x steps={self.steps} x one {n} x {n} HHL solve at clock_qubits="
            f"{self.clock_qubits}, shots={self.shots}",
        )


def hhl_in_the_loop(cfg: HHLLoopConfig) -> dict[str, Any]:
    """Exact Newton vs HHL Newton from the same start; per-step losses and per-solve accuracy.

    Both runs damp every solve to ``kappa <= kappa_target`` (by default what the clock resolves,
    :func:`newton.hhl.resolvable_kappa`), so the comparison is of the same damped Newton method;
    each solve's relative error is reported beside the final loss gap.
    """

    n_params = (cfg.features + 1) * len(cfg.classes)  # <= 16, checked by the config
    from newton.hhl import resolvable_kappa

    kappa_target = cfg.kappa_target or resolvable_kappa(cfg.clock_qubits)
    train_ds, test_ds = digits_datasets(0.2, cfg.seed, classes=cfg.classes, pca=cfg.features)
    batch = train_ds.tensors
    x_te, y_te = test_ds.tensors
    out: dict[str, Any] = {"n_params": n_params, "runs": {}}
    for mode in ("cholesky", "quantum"):
        seed_everything(cfg.seed)
        model = nn.Linear(cfg.features, len(cfg.classes))
        sched = Scheduler(
            SchedulerConfig(
                mode=mode,
                clock_qubits=cfg.clock_qubits,
                max_clock_qubits=max(10, cfg.clock_qubits),
                hhl_shots=cfg.shots or None,
                seed=cfg.seed,
            )
        )
        opt = QNewton(
            model.parameters(),
            damping=cfg.damping,
            structure="full",
            scheduler=sched,
            kappa_target=kappa_target,
        )
        t0 = time.perf_counter()
        result = train(
            model,
            [batch],
            _ce,
            opt,
            TrainConfig(
                max_steps=cfg.steps,
                clip_grad_norm=None,
                progress=False,
                seed=cfg.seed,
                device="cpu",
            ),
        )
        wall = time.perf_counter() - t0
        with torch.no_grad():
            final = float(_ce(model, batch))
            acc = float((model(x_te).argmax(-1) == y_te).float().mean())
        out["runs"][mode] = {
            "losses": [h["loss"] for h in opt.history] + [final],
            "final_loss": final,
            "test_acc": acc,
            "wall_s": wall,
            "solves": sched.log,
            "steps": result.step,
        }
    exact, quantum = out["runs"]["cholesky"]["final_loss"], out["runs"]["quantum"]["final_loss"]
    out["relative_gap"] = abs(quantum - exact) / exact
    fids = [r.get("fidelity", math.nan) for r in out["runs"]["quantum"]["solves"]]
    out["min_fidelity"] = float(np.nanmin(fids)) if fids else math.nan
    solves = out["runs"]["quantum"]["solves"]
    hhl = [r for r in solves if r["backend"] == "hhl_aer"]
    out["kappa_target"] = kappa_target
    out["hhl_solves"] = len(hhl)
    out["classical_routes"] = len(solves) - len(hhl)
    out["max_rel_error"] = max((r["rel_error"] for r in hhl), default=math.nan)
    out["max_kappa_bound"] = max((r["kappa_bound"] or math.nan for r in solves), default=math.nan)
    out["mean_p_success"] = float(np.mean([r["p_success"] for r in hhl])) if hhl else math.nan
    out["min_p_success_amplified"] = min((r["p_success_amplified"] for r in hhl), default=math.nan)
    out["max_aa_circuit_uses"] = max((r["aa_circuit_uses"] for r in hhl), default=0)
    return out


@dataclass(frozen=True)
class CrossoverConfig:
    """Where the quantum solver is predicted to win."""

    kappas: Annotated[tuple[Kappa, ...], MinLen(1), MaxLen(1000), Unique] = (
        1.0,
        10.0,
        100.0,
        1e3,
        1e4,
        1e5,
        1e6,
    )  # condition numbers
    gate_times_s: Annotated[tuple[Positive, ...], MinLen(1), MaxLen(1000), Unique] = (
        1e-6,
        1e-9,
        1e-12,
        1e-15,
        1e-18,
    )  # today ... attosecond
    query_models: Annotated[tuple[QueryModel, ...], MinLen(1), Unique] = ("jennings", "dalzell")
    epsilon: Epsilon = 1e-2  # solve precision
    d: Count = 32  # row sparsity of the (sparsified) block
    flops: NonNegative = 0.0  # classical FLOP/s; 0 = measure this machine
    n_max: Annotated[float, Interval(gt=1, le=1e300)] = 1e15  # search limit for N
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse sweeps estimated above (CPU-core s)

    def __post_init__(self) -> None:
        check_declared(self)
        points = 4 * len(self.query_models) * len(self.gate_times_s) * len(self.kappas)
        grid = 20 * math.log10(self.n_max)
        check_work(
            points * grid * 5e-6,  # seconds per cost-model evaluation (measured: ~2 us)
            0.0,
            max_cpu_s=self.max_cpu_s,
            max_memory_gb=math.inf,
            what="this crossover sweep",
            drivers=f"{points} (I/O, baseline, query model, gate time, kappa) points x "
            f"{grid:.0f} sizes up to n_max={self.n_max:g}",
        )


def crossover_curves(cfg: CrossoverConfig) -> dict[str, Any]:
    """Crossover N*(kappa) per gate time, query model, I/O and classical baseline; paper-mode rule."""
    classical = ClassicalCostModel(flops=cfg.flops or None)
    rows = []
    baselines: tuple[Literal["cholesky", "best"], ...] = ("cholesky", "best")
    for io in (False, True):
        for against in baselines:
            for model in cfg.query_models:
                for tg in cfg.gate_times_s:
                    q = QuantumCostModel(query_model=model, gate_time_s=tg, include_io=io)
                    for kappa in cfg.kappas:
                        n_star = crossover_size(
                            kappa=kappa,
                            epsilon=cfg.epsilon,
                            quantum=q,
                            classical=classical,
                            d=cfg.d,
                            against=against,
                            n_max=cfg.n_max,
                        )
                        rows.append(
                            {
                                "io": io,
                                "against": against,
                                "query_model": model,
                                "gate_time_s": tg,
                                "kappa": kappa,
                                # None (valid JSON): no crossover up to n_max
                                "n_star": n_star if math.isfinite(n_star) else None,
                            }
                        )
    paper = []
    for n in (10**2, 10**3, 10**4, 10**5, 10**6):
        # largest kappa (on a fine log grid) where Q-Newton's unit-cost rule still picks quantum
        grid = np.logspace(0, 12, 1201)
        wins = [
            k
            for k in grid
            if paper_mode_costs(n=n, kappa=k, d=n, epsilon=cfg.epsilon)[0] < n**2.373
        ]
        paper.append({"n": n, "d": n, "max_quantum_kappa": float(max(wins)) if wins else None})
    return {"rows": rows, "paper_mode": paper, "flops": classical.rate()}


@dataclass(frozen=True)
class NoiseConfig:
    """Training with solve errors of relative size epsilon (modelled quantum solver)."""

    epsilons: Annotated[
        tuple[Annotated[float, Interval(ge=0, lt=1)], ...], MinLen(1), MaxLen(100), Unique
    ] = (0.0, 1e-2, 1e-1)  # 0 = exact Cholesky solves
    hidden: Count = 16  # MLP hidden width (digits)
    steps: Count = 30  # optimizer steps
    batch_size: Count = 256
    curvature_batch: Count = 64
    damping: Damping = 1e-2
    target_loss: NonNegative = 0.5  # the train loss whose first crossing gives "steps to target"
    seed: Seed = 0
    max_cpu_s: CpuSeconds = DEFAULT_MAX_CPU_S  # refuse runs estimated above (CPU-core s)
    max_memory_gb: MemoryGB = DEFAULT_MAX_MEMORY_GB  # refuse runs estimated above (GB)

    def __post_init__(self) -> None:
        check_declared(self)
        seconds, gigabytes = self.work()
        check_work(
            seconds,
            gigabytes,
            max_cpu_s=self.max_cpu_s,
            max_memory_gb=self.max_memory_gb,
            what="this injected-error run",
            drivers=f"{len(self.epsilons)} epsilons x steps={self.steps} block-Newton steps of "
            f"an MLP 64-{self.hidden}-10 (curvature_batch={self.curvature_batch})",
        )

    def work(self) -> tuple[float, float]:
        """Estimated (CPU-core seconds, GB): per step the dense GGN blocks, their spectra and
        solves, ``5 P^2`` flops per curvature example (measured: 7.9 s for the defaults against
        9 s estimated; hidden 64, 15 steps: 7.7 s against 22 s)."""
        p = mlp_parameters(64, self.hidden, 10)
        per_step = 5.0 * p * p * min(self.curvature_batch, self.batch_size)
        seconds = len(self.epsilons) * self.steps * (per_step / FLOPS + STEP_OVERHEAD_S["qnewton"])
        memory = 3 * 8 * min(p, 2048) ** 2 + 40 * p * 4
        return seconds, memory / 1e9


def noise_robustness(cfg: NoiseConfig) -> dict[str, Any]:
    """Steps to a target loss and final loss per injected error size; slowdown vs exact solves."""
    train_ds, _ = digits_datasets(0.2, cfg.seed)
    x_tr, y_tr = train_ds.tensors
    rows, curves = [], {}
    for eps in cfg.epsilons:
        seed_everything(cfg.seed)
        model = _mlp(64, cfg.hidden, 10)
        sched_cfg = (
            SchedulerConfig(mode="cholesky", seed=cfg.seed)
            if eps == 0
            else SchedulerConfig(mode="quantum", epsilon=eps, simulate_hhl=False, seed=cfg.seed)
        )
        opt = QNewton(
            model.parameters(),
            damping=cfg.damping,
            scheduler=Scheduler(sched_cfg),
            curvature_batch=cfg.curvature_batch,
            method="blocks",  # the errors are injected into the scheduler's block solves
        )
        losses: list[float] = []

        def on_step(
            step: int, loss: float, losses: list[float] = losses, model: nn.Module = model
        ) -> None:
            with torch.no_grad():
                losses.append(float(nn.functional.cross_entropy(model(x_tr), y_tr)))

        train(
            model,
            make_loader(train_ds, cfg.batch_size, seed=cfg.seed),
            _ce,
            opt,
            TrainConfig(
                max_steps=cfg.steps,
                clip_grad_norm=None,
                progress=False,
                seed=cfg.seed,
                device="cpu",
            ),
            on_step=on_step,
        )
        hit = next((i + 1 for i, v in enumerate(losses) if v <= cfg.target_loss), None)
        curves[eps] = losses
        rows.append(
            {
                "epsilon": eps,
                "final_train_loss": losses[-1],
                "steps_to_target": hit,
                "fallback_steps": sum(h["fallback"] for h in opt.history),
            }
        )
    base = rows[0]["steps_to_target"]
    for r in rows:
        r["slowdown"] = r["steps_to_target"] / base if base and r["steps_to_target"] else None
    return {"rows": rows, "curves": curves}


# ----------------------------------------------------------------------------------------------
# Figures


def plot_compare(result: dict[str, Any]) -> Any:
    """Loss and accuracy against epochs and against training time (CPU and wall); kappa or CG."""
    import matplotlib.pyplot as plt

    metric = result.get("metric", "test_acc")
    label = "test accuracy" if metric == "test_acc" else "test MSE"
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.4))
    for name, rows in result["curves"].items():
        ep = [r["epoch"] for r in rows]
        ax[0].plot(ep, [r[metric] for r in rows], "o-", label=name)
        ax[1].plot([r["wall_s"] for r in rows], [r["train_loss"] for r in rows], "o-", label=name)
        ax[2].plot([r["wall_s"] for r in rows], [r[metric] for r in rows], "o-", label=name)
    ax[0].set(xlabel="epoch", ylabel=label)
    ax[1].set(xlabel="training wall time (s)", ylabel="train loss", yscale="log")
    ax[2].set(xlabel="training wall time (s)", ylabel=label)
    if metric == "test_acc":
        ax[2].set_ylim(0.8, 1.0)
    else:
        ax[2].set_yscale("log")
    ax[0].legend()
    k = [r for r in result["kappa"] if r["kappa_max"] is not None]
    if k:
        ax[3].plot(
            [r["step"] for r in k], [r["kappa_undamped_max"] for r in k], label="max undamped"
        )
        ax[3].plot([r["step"] for r in k], [r["kappa_max"] for r in k], label="max damped")
        ax[3].plot([r["step"] for r in k], [r["kappa_median"] for r in k], label="median damped")
        ax[3].set(xlabel="QNewton step", ylabel="block condition number", yscale="log")
        ax[3].legend()
    elif result["kappa"]:  # Hessian-free steps: CG iterations and damping instead
        rows = result["kappa"]
        ax[3].plot([r["step"] for r in rows], [r["cg_iterations"] for r in rows], label="CG iters")
        ax[3].plot([r["step"] for r in rows], [r["damping"] for r in rows], label="LM damping")
        ax[3].set(xlabel="QNewton step (Hessian-free)", yscale="log")
        ax[3].legend()
    fig.tight_layout()
    return fig


def plot_hhl_loop(result: dict[str, Any]) -> Any:
    """Train loss per Newton step, exact (Cholesky) against HHL on Aer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for mode, label in (("cholesky", "exact Newton (Cholesky)"), ("quantum", "HHL on Aer")):
        losses = result["runs"][mode]["losses"]
        ax.plot(range(len(losses)), losses, "o-" if mode == "cholesky" else "x--", label=label)
    ax.set(xlabel="Newton step", ylabel="train loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_crossover(result: dict[str, Any]) -> Any:
    """Crossover N* against kappa per gate time: without and with I/O against Cholesky, and without I/O against the best classical solver."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 3.6))
    panels = [
        (False, "cholesky", "no I/O, vs Cholesky"),
        (True, "cholesky", "with I/O, vs Cholesky"),
        (False, "best", "no I/O, vs best classical"),
    ]
    model = result["rows"][0]["query_model"]
    for a, (io, against, title) in zip(ax, panels, strict=True):
        for tg in sorted({r["gate_time_s"] for r in result["rows"]}):
            pts = [
                r
                for r in result["rows"]
                if r["io"] == io
                and r["against"] == against
                and r["gate_time_s"] == tg
                and r["query_model"] == model
            ]
            a.plot(
                [r["kappa"] for r in pts],
                [np.nan if r["n_star"] is None else r["n_star"] for r in pts],
                "o-",
                label=f"t_gate={tg:g}s",
            )
        a.set(
            xscale="log",
            yscale="log",
            xlabel="kappa",
            ylabel="crossover N*",
            title=f"{title} ({model})",
        )
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_noise(result: dict[str, Any]) -> Any:
    """Train loss per step for each injected solve error epsilon."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for eps, losses in result["curves"].items():
        ax.plot(range(1, len(losses) + 1), losses, label=f"epsilon={eps:g}")
    ax.set(xlabel="step", ylabel="train loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig
