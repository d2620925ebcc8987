"""The shared training loop: exactness against hand-written loops, resume, NaN guard, schedules."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.errors import NonFiniteLossError, QHybridError
from qhybrid.runs import read_metrics
from qhybrid.train import (
    TrainConfig,
    distillation_loss,
    load_checkpoint,
    lr_factor,
    make_loader,
    train,
)


def mse(model: nn.Module, batch) -> torch.Tensor:
    return F.mse_loss(model(batch[0]), batch[1])


def regression_data(n: int = 32, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def cfg(**kw) -> TrainConfig:
    base = {"clip_grad_norm": None, "progress": False, "device": "cpu", "log_every": 1}
    return TrainConfig(**{**base, **kw})


def test_matches_a_hand_written_sgd_loop():
    # Prepare: the same init, data order and lr for the loop and for plain torch.
    x, y = regression_data()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    torch.manual_seed(1)
    model = nn.Linear(5, 1)
    ref = nn.Linear(5, 1)
    ref.load_state_dict(model.state_dict())
    # Execute
    result = train(
        model, batches, mse, torch.optim.SGD(model.parameters(), lr=0.05), cfg(max_steps=10)
    )
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for step in range(10):
        xb, yb = batches[step % 4]
        opt.zero_grad()
        F.mse_loss(ref(xb), yb).backward()
        opt.step()
    # Assert
    assert result.step == 10 and result.epoch == 2
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradient_accumulation_equals_the_larger_batch():
    x, y = regression_data()
    torch.manual_seed(2)
    a, b = nn.Linear(5, 1), nn.Linear(5, 1)
    b.load_state_dict(a.state_dict())
    small = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 32, 4)]
    large = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    train(
        a, small, mse, torch.optim.SGD(a.parameters(), lr=0.1), cfg(max_steps=6, grad_accum_steps=2)
    )
    train(b, large, mse, torch.optim.SGD(b.parameters(), lr=0.1), cfg(max_steps=6))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _resume_setup(seed: int):
    torch.manual_seed(seed)  # a different init on purpose: the checkpoint must overwrite it
    model = DropoutNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = regression_data(n=36)
    loader = make_loader(torch.utils.data.TensorDataset(x, y), batch_size=4, seed=7)
    config = cfg(
        max_steps=10,
        grad_accum_steps=2,
        lr_schedule="cosine",
        warmup_steps=2,
        clip_grad_norm=0.5,
        checkpoint_every=2,
        seed=3,
        log_every=1,
    )
    return model, opt, loader, config


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # Uninterrupted: 10 steps (36 samples / batch 4 = 9 micro-batches per epoch, so steps straddle epochs).
    model_a, opt_a, loader_a, config = _resume_setup(0)
    train(model_a, loader_a, mse, opt_a, config, metrics_path=tmp_path / "a.jsonl")

    # Interrupted after step 5 (checkpoint at step 4), then resumed in a fresh model and optimizer.
    model_b, opt_b, loader_b, _ = _resume_setup(0)

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            model_b,
            loader_b,
            mse,
            opt_b,
            config,
            checkpoint_dir=tmp_path / "ck",
            metrics_path=tmp_path / "b.jsonl",
            on_step=crash,
        )
    assert (tmp_path / "ck" / "latest").read_text().strip() == "step-00000004"
    model_c, opt_c, loader_c, _ = _resume_setup(99)
    result = train(
        model_c,
        loader_c,
        mse,
        opt_c,
        config,
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        metrics_path=tmp_path / "b.jsonl",
    )

    assert result.step == 10
    for p, q in zip(model_a.state_dict().values(), model_c.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    # The resumed metrics file reads as one uninterrupted run (step 5's record was dropped and redone).
    assert read_metrics(tmp_path / "b.jsonl") == read_metrics(tmp_path / "a.jsonl")


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x, y = regression_data()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    calls = {"n": 0}

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        calls["n"] += 1
        loss = mse(m, batch)
        return loss * float("nan") if calls["n"] == 7 else loss  # step index 6 goes bad

    with pytest.raises(NonFiniteLossError, match="loss is nan at step 6") as err:
        train(
            model,
            batches,
            loss_fn,
            torch.optim.SGD(model.parameters(), lr=0.05),
            cfg(max_steps=20, checkpoint_every=2),
            checkpoint_dir=tmp_path,
        )
    assert "step-00000006" in str(err.value)
    assert (tmp_path / "latest").read_text().strip() == "step-00000006"
    # The bad step never touched the weights: they equal the last good checkpoint's.
    restored = nn.Linear(5, 1)
    state = load_checkpoint(tmp_path, restored, restore_rng=False)
    assert state["step"] == 6
    for p, q in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(p, q) and torch.isfinite(p).all()


def test_early_stopping_after_patience_evaluations():
    model = nn.Linear(5, 1)
    x, y = regression_data()
    values = iter([1.0, 0.5, 0.6, 0.7, 0.4])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": next(values)}

    result = train(
        model,
        [(x, y)],
        mse,
        torch.optim.SGD(model.parameters(), lr=0.01),
        cfg(max_steps=100, eval_every=2, early_stop_metric="val_loss", early_stop_patience=2),
        eval_fn=eval_fn,
    )
    # Evaluations at steps 2, 4, 6, 8: best 0.5 at step 4, then two without improvement.
    assert result.stopped_early and result.step == 8 and result.best_metric == 0.5
    assert [r["val_loss"] for r in result.history if "val_loss" in r] == [1.0, 0.5, 0.6, 0.7]


def test_closure_optimizer_is_driven_through_step_closure():
    class ClosureLBFGS(torch.optim.LBFGS):
        requires_closure = True

    x, y = regression_data()
    torch.manual_seed(4)
    model, ref = nn.Linear(5, 1), nn.Linear(5, 1)
    ref.load_state_dict(model.state_dict())
    result = train(
        model, [(x, y)], mse, ClosureLBFGS(model.parameters(), lr=0.5, max_iter=5), cfg(max_steps=3)
    )
    opt = torch.optim.LBFGS(ref.parameters(), lr=0.5, max_iter=5)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(ref(x), y)
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(3)]
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    # The loop records what step(closure) returned: the loss before the last step.
    assert result.loss == pytest.approx(losses[-1])


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_fp32_weights():
    x, y = regression_data()
    seen = []

    def loss(model, batch):
        out = model(batch[0])
        seen.append(out.dtype)
        return F.mse_loss(out.float(), batch[1])

    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    before = F.mse_loss(model(x), y).item()
    train(
        model,
        [(x, y)],
        loss,
        torch.optim.SGD(model.parameters(), lr=0.1),
        cfg(max_steps=20, autocast="bf16"),
    )
    assert set(seen) == {torch.bfloat16} and model.weight.dtype == torch.float32
    assert F.mse_loss(model(x), y).item() < before


def test_lr_schedule_values():
    c = TrainConfig(max_steps=110, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1)
    assert lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0)
    assert lr_factor(60, c) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_factor(110, c) == pytest.approx(0.1)
    lin = TrainConfig(max_steps=100, lr_schedule="linear", min_lr_ratio=0.0)
    assert lr_factor(50, lin) == pytest.approx(0.5)


def test_the_schedule_reaches_the_optimizer():
    model = nn.Linear(5, 1)
    x, y = regression_data()
    result = train(
        model,
        [(x, y)],
        mse,
        torch.optim.SGD(model.parameters(), lr=1.0),
        cfg(max_steps=4, lr_schedule="linear", min_lr_ratio=0.0),
    )
    assert [r["lr"] for r in result.history if "lr" in r] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_distillation_loss_matches_kl_div():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    expected = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(distillation_loss(s, t, temperature=2.0), expected)
    # A mask averages over the kept positions only.
    mask = torch.tensor([1, 1, 0, 0, 1, 0])
    kept = mask.bool()
    expected_masked = distillation_loss(s[kept], t[kept], temperature=2.0)
    torch.testing.assert_close(distillation_loss(s, t, temperature=2.0, mask=mask), expected_masked)
    assert distillation_loss(t, t).abs() < 1e-6
    with pytest.raises(QHybridError, match="same shape"):
        distillation_loss(s, t[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_steps": 0}, "max_steps=0"),
        ({"grad_accum_steps": 0}, "grad_accum_steps=0"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm=-1.0"),
        ({"early_stop_patience": 3}, "needs early_stop_metric"),
        ({"autocast": "fp8"}, "autocast='fp8'"),
    ],
)
def test_bad_train_config(kwargs, pattern):
    with pytest.raises(QHybridError, match=pattern):
        TrainConfig(**kwargs)


def test_empty_data_and_missing_cuda_are_clear_errors():
    model = nn.Linear(5, 1)
    with pytest.raises(QHybridError, match="yielded no batches"):
        train(model, [], mse, torch.optim.SGD(model.parameters(), lr=0.1), cfg(max_steps=2))
    if not torch.cuda.is_available():
        with pytest.raises(QHybridError, match="CUDA is not available"):
            train(model, [], mse, torch.optim.SGD(model.parameters(), lr=0.1), cfg(device="cuda"))


def test_checkpoint_folder_contents(tmp_path):
    model = nn.Linear(5, 1)
    x, y = regression_data()
    train(
        model,
        [(x, y)],
        mse,
        torch.optim.SGD(model.parameters(), lr=0.1),
        cfg(max_steps=6, checkpoint_every=2, keep_checkpoints=2),
        checkpoint_dir=tmp_path,
    )
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000004", "step-00000006"]
    final = tmp_path / "step-00000006"
    assert {p.name for p in final.iterdir()} == {
        "model.safetensors",
        "optimizer.pt",
        "rng.pt",
        "state.json",
    }
    assert json.loads((final / "state.json").read_text())["step"] == 6
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.gpu
def test_cuda_training_matches_cpu_and_resumes_exactly(tmp_path):
    x, y = regression_data(n=64)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]

    def run(device: str, max_steps: int, **kw):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 1))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        train(
            model,
            batches,
            mse,
            opt,
            cfg(max_steps=max_steps, device=device, checkpoint_every=3, deterministic=True),
            **kw,
        )
        return {k: v.cpu() for k, v in model.state_dict().items()}

    cpu = run("cpu", 9)
    gpu = run("cuda", 9)
    for k in cpu:
        torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-4, atol=1e-5)
    run("cuda", 6, checkpoint_dir=tmp_path)  # stops at 6; resume to 9 from the step-6 checkpoint
    resumed = run("cuda", 9, checkpoint_dir=tmp_path, resume=True)
    for k in gpu:
        assert torch.equal(resumed[k], gpu[k])


def test_metrics_file_folder_is_created(tmp_path):
    model = nn.Linear(5, 1)
    x, y = regression_data()
    path = tmp_path / "not" / "yet" / "metrics.jsonl"
    train(
        model,
        [(x, y)],
        mse,
        torch.optim.SGD(model.parameters(), lr=0.1),
        cfg(max_steps=2),
        metrics_path=path,
    )
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def _inf_grad(x: torch.Tensor) -> torch.Tensor:
    return _InfGrad.apply(x)


def test_a_non_finite_gradient_with_a_finite_loss_never_reaches_the_weights():
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x, y = regression_data()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    calls = {"n": 0}

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        calls["n"] += 1
        loss = mse(m, batch)
        if calls["n"] == 3:  # a finite loss whose gradient is infinite
            w = m.weight.sum()
            return loss + _inf_grad(w)
        return loss

    before = {}

    def on_step(step: int, loss: float) -> None:
        before.update({k: v.clone() for k, v in model.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match="gradient norm is (nan|inf) at step 2"):
        train(
            model,
            batches,
            loss_fn,
            torch.optim.SGD(model.parameters(), lr=0.05),
            cfg(max_steps=10),
            on_step=on_step,
        )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and torch.isfinite(v).all()
    assert all(p.grad is None for p in model.parameters())


def test_clipping_uses_the_same_norm_as_torch(tmp_path):
    torch.manual_seed(0)
    a, b = nn.Linear(5, 1), nn.Linear(5, 1)
    b.load_state_dict(a.state_dict())
    x, y = regression_data()
    batches = [(x, y * 100)]  # large gradients: clipping is active
    train(
        a,
        batches,
        mse,
        torch.optim.SGD(a.parameters(), lr=0.1),
        cfg(max_steps=1, clip_grad_norm=0.5),
    )
    mse(b, batches[0]).backward()
    nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    torch.optim.SGD(b.parameters(), lr=0.1).step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_stale_temporary_checkpoints_are_removed_at_start(tmp_path):
    from qhybrid.train import clean_stale_checkpoints

    dead = tmp_path / ".step-00000004.tmp-999999999"  # no such process
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".step-00000004.tmp-{1}"  # pid 1 is always running
    alive.mkdir()
    model = nn.Linear(5, 1)
    x, y = regression_data()
    train(
        model,
        [(x, y)],
        mse,
        torch.optim.SGD(model.parameters(), lr=0.01),
        cfg(max_steps=2),
        checkpoint_dir=tmp_path,
    )
    assert not dead.exists() and alive.exists()
    assert clean_stale_checkpoints(tmp_path) == []
    assert (tmp_path / "latest").read_text().strip() == "step-00000002"


def test_plain_progress_lines_when_not_a_terminal(monkeypatch, capsys):
    from qhybrid import train as loop

    clock = {"t": 0.0}
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(loop.sys.stderr, "isatty", lambda: False, raising=False)
    progress = loop._PlainProgress(total=100, enabled=True, every=10)
    for step in range(1, 101):
        clock["t"] += 0.5 if step <= 50 else 16.0  # fast steps, then one every 16 s
        progress(step, 1.0)
    lines = capsys.readouterr().err.splitlines()
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    # fast part: every 10 steps but >= 2 s apart (10 steps = 5 s); slow part: every step (> 15 s)
    assert steps[:5] == [10, 20, 30, 40, 50]
    assert steps[5:] == list(range(51, 101))
    assert lines[0] == "step 10/100 loss 1 (5 s)"


def test_an_uneven_dataset_under_torchrun_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    data = torch.utils.data.TensorDataset(torch.zeros(7, 2))
    with pytest.raises(QHybridError, match="7 examples does not split evenly.*drop_last=True"):
        make_loader(data, 2)
    assert len(list(make_loader(data, 2, drop_last=True))) == 1  # 3 of 7 on rank 1, batch 2
    assert len(list(make_loader(torch.utils.data.TensorDataset(torch.zeros(8, 2)), 2))) == 2
