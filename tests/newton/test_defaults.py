"""QNewton at its constructor defaults: it reaches SGD's final test metric, and its training loss
never rises above 2x its running minimum over 100 epochs (issue 23).

The fast variants (default suite) take one seed of the two small tasks; the slow ones take every
task of ``benchmarks/bench_newton_hf.py`` (the 115,510-parameter MLP included) on 5 seeds and
batches of 512 and 256. Speed is measured by the benchmark, never here.
"""

from __future__ import annotations

import pytest
import torch

from newton.experiments import CompareConfig, make_task, train_curve

TASKS = {  # dataset, hidden width, SGD's lr (the benchmark's choice on its grid)
    "digits-32": ("digits", 32, 1.0),
    "friedman-64": ("friedman", 64, 0.1),
    "digits-1540": ("digits", 1540, 0.1),
}


def _config(task: str, seed: int, epochs: int, batch: int = 512) -> CompareConfig:
    dataset, hidden, sgd_lr = TASKS[task]
    return CompareConfig(
        dataset=dataset,
        hidden=hidden,
        epochs=epochs,
        sgd_lr=sgd_lr,
        qnewton_batch_size=batch,
        seed=seed,
    )


def _max_rise(losses: list[float]) -> float:
    """max over epochs of loss / (running minimum so far)."""
    return max(v / min(losses[: i + 1]) for i, v in enumerate(losses))


def _check_defaults(task: str, seed: int, batch: int) -> None:
    """SGD for 20 epochs sets the target; QNewton at its defaults trains 100 epochs: it reaches
    the target within 40 (the benchmark's budget) and never rises above 2x its running minimum."""
    torch.set_num_threads(1)
    cfg = _config(task, seed, 20)
    t = make_task(cfg)
    sgd, _ = train_curve("sgd", cfg, t)
    target = sgd[-1][t.metric]
    rows, opt = train_curve("qnewton", _config(task, seed, 100, batch), t)
    losses = [r["train_loss"] for r in rows]
    assert len(losses) == 100 and len(opt.history) >= 100  # 100 epochs of QNewton steps
    hits = [r["epoch"] for r in rows if t.reached(r[t.metric], target)]
    assert hits and hits[0] <= 40, f"{t.metric}: SGD {target:.4f}, QNewton never reached it"
    rise = _max_rise(losses)
    assert rise <= 2.0, f"max loss / running min {rise:.3f}; losses {losses}"
    assert losses[-1] < 0.5 * losses[0]  # and it trained


def test_max_rise_is_against_the_running_minimum():
    assert _max_rise([1.0, 0.5, 0.9, 0.2, 0.3]) == pytest.approx(1.8)
    assert _max_rise([1.0, 0.5, 0.25]) == 1.0


@pytest.mark.parametrize("task", ["digits-32", "friedman-64"])
def test_defaults_reach_sgd_and_stay_stable_for_100_epochs(task):
    _check_defaults(task, seed=0, batch=512)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [512, 256])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("task", sorted(TASKS))
def test_defaults_on_every_task_seed_and_batch(task, seed, batch):
    if task == "digits-1540" and batch == 256:
        pytest.skip("the benchmark's batch for the big MLP is 512 (256: same rule, 2x the time)")
    _check_defaults(task, seed, batch)
