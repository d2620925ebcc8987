"""Datasets for the Newton experiments: scikit-learn's bundled digits, Friedman #1 regression, and
MNIST from local IDX files.

Nothing is downloaded. MNIST is read from a folder the user already has, holding the four files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (optionally ``.gz``).

IDX format (LeCun): two zero bytes, a type code (0x08 = uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian int32,
then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from newton.errors import NewtonError

__all__ = ["digits_datasets", "friedman_datasets", "load_mnist", "read_idx"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


MAX_IDX_BYTES = 1 << 30  # the largest IDX file read (MNIST's training images: 47 MB)


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (``.gz`` allowed) into a numpy array with its declared shape and type.

    At most ``max_bytes`` are read (and decompressed); a missing, non-regular (a device, a FIFO),
    oversized, corrupt or truncated file is a :class:`~newton.errors.NewtonError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise NewtonError(f"IDX file '{path}' does not exist or is not a regular file")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise NewtonError(f"'{path}' cannot be read as an IDX file: {err}") from err
    if len(raw) > max_bytes:
        raise NewtonError(f"'{path}' holds more than {max_bytes:,} bytes; it is not an IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise NewtonError(f"'{path}' is not an IDX file (it must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise NewtonError(f"'{path}' has unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NewtonError(f"'{path}' is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[code])
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise NewtonError(
            f"'{path}' declares shape {shape} ({count * dtype.itemsize} data bytes) but holds "
            f"{len(raw) - header}; the file is truncated or not IDX"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find(directory: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (directory / name).is_file():
            return directory / name
    raise NewtonError(
        f"MNIST file '{stem}' (or .gz) not found in '{directory}'; put the four IDX files there"
    )


def load_mnist(
    directory: str | Path, *, max_train: int = 0, max_test: int = 0
) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """(train, test) MNIST TensorDatasets from local IDX files: images flattened to 784, scaled to [0, 1]."""
    directory = Path(directory)
    out = []
    for split, limit in (("train", max_train), ("t10k", max_test)):
        x = read_idx(_find(directory, f"{split}-images-idx3-ubyte"))
        y = read_idx(_find(directory, f"{split}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise NewtonError(f"MNIST {split} images {x.shape} and labels {y.shape} do not match")
        if limit:
            x, y = x[:limit], y[:limit]
        xt = torch.tensor(x.reshape(len(x), -1) / 255.0, dtype=torch.float32)
        out.append(torch.utils.data.TensorDataset(xt, torch.tensor(y, dtype=torch.long)))
    return out[0], out[1]


def digits_datasets(
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    classes: tuple[int, ...] | None = None,
    pca: int = 0,
) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """scikit-learn's 8x8 digits as (train, test), optionally some classes only and PCA features.

    Args:
        test_fraction: held-out share.
        seed: split seed.
        classes: keep only these digits, relabelled 0..k-1 in the given order.
        pca: if > 0, project onto this many principal components (fitted on the training split)
            and standardise them: small models for the HHL-in-the-loop experiment.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if classes is not None:
        keep = np.isin(y, classes)
        x, y = x[keep], np.array([classes.index(v) for v in y[keep]])
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if pca:
        from sklearn.decomposition import PCA

        proj = PCA(n_components=pca, random_state=seed).fit(x_tr)
        x_tr, x_te = proj.transform(x_tr), proj.transform(x_te)
        mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-12
        x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd

    def ds(a: np.ndarray, b: np.ndarray) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(
            torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.long)
        )

    return ds(x_tr, y_tr), ds(x_te, y_te)


def friedman_datasets(
    test_fraction: float = 0.2, seed: int = 0, *, n: int = 2000, noise: float = 1.0
) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """Friedman #1 regression as (train, test): 10 uniform features, targets standardised.

    ``y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5 + noise`` (x6..x10 are irrelevant), drawn
    by :func:`sklearn.datasets.make_friedman1` (Friedman, Annals of Statistics 1991). The targets
    are standardised with the training split's mean and deviation, so the test MSE of predicting
    the mean is about 1 and the noise floor is ``noise^2 / var(y)`` (about 0.04 at noise 1).
    Targets have shape ``(N, 1)``, for an MLP with one output and ``mse_loss``.
    """
    from sklearn.datasets import make_friedman1
    from sklearn.model_selection import train_test_split

    x, y = make_friedman1(n_samples=n, noise=noise, random_state=seed)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed)
    mu, sd = y_tr.mean(), y_tr.std() + 1e-12

    def ds(a: np.ndarray, b: np.ndarray) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(
            torch.tensor(a, dtype=torch.float32),
            torch.tensor((b - mu) / sd, dtype=torch.float32).reshape(-1, 1),
        )

    return ds(x_tr, y_tr), ds(x_te, y_te)
