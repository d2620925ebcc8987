"""IDX reader and MNIST loader on tiny IDX files written by the test."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from newton.data import digits_datasets, load_mnist, read_idx
from newton.errors import NewtonError


def _write_idx(path, array: np.ndarray, code: int = 0x08, gz: bool = False) -> None:
    dt = {0x08: ">u1", 0x0D: ">f4"}[code]
    raw = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    raw += array.astype(dt).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_read_idx_roundtrip(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", imgs)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), imgs)
    floats = np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32)
    _write_idx(tmp_path / "b.gz", floats, code=0x0D, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), floats)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(NewtonError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5]) + b"abc")
    with pytest.raises(NewtonError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(NewtonError, match="does not exist"):
        read_idx(tmp_path / "missing")


def test_load_mnist_from_tiny_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("t10k", 3)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n), gz=True)
    train, test = load_mnist(tmp_path, max_train=4)
    assert len(train) == 4 and len(test) == 3
    x, y = train.tensors
    assert x.shape == (4, 784) and float(x.max()) <= 1.0 and y.dtype.is_floating_point is False
    with pytest.raises(NewtonError, match="not found"):
        load_mnist(tmp_path / "nowhere")


def test_digits_subset_with_pca():
    train, test = digits_datasets(classes=(3, 8), pca=7)
    x, y = train.tensors
    assert x.shape[1] == 7 and set(y.tolist()) == {0, 1}
    assert abs(float(x.mean())) < 1e-5


def test_compare_runs_on_local_mnist_idx_files(tmp_path):
    from newton.experiments import CompareConfig, compare_optimizers

    rng = np.random.default_rng(1)
    for split, n in (("train", 24), ("t10k", 8)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = CompareConfig(
        dataset="mnist",
        mnist_dir=str(tmp_path),
        hidden=2,
        epochs=1,
        batch_size=24,
        curvature_batch=8,
        optimizers=("qnewton", "sgd"),
    )
    res = compare_optimizers(cfg)
    assert {r["optimizer"] for r in res["summary"]} == {"qnewton", "sgd"}
    assert all(np.isfinite(r["final_train_loss"]) for r in res["summary"])


def test_the_100k_parameter_mnist_setting_takes_hessian_free_steps(tmp_path):
    # qhybrid/presets/newton_mnist.toml's model (784-128-10, 101,770 parameters) on tiny IDX files
    from newton.experiments import CompareConfig, compare_optimizers

    rng = np.random.default_rng(2)
    for split, n in (("train", 32), ("t10k", 8)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = CompareConfig(
        dataset="mnist",
        mnist_dir=str(tmp_path),
        hidden=128,
        epochs=2,
        qnewton_batch_size=32,
        curvature_batch=16,
        optimizers=("qnewton",),
    )
    res = compare_optimizers(cfg)
    rows = res["curves"]["qnewton"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] or rows[0]["train_loss"] < 1e-3
    assert all(k["cg_iterations"] >= 1 for k in res["kappa"])  # Hessian-free steps were taken
