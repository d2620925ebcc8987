"""The learning task of the FL experiments: scikit-learn digits, client partitions, models, local training.

Data: the 1,797 8x8 handwritten digits bundled with scikit-learn (no download), split 80/20 into a
shared training pool and a held-out test set, then partitioned across clients either IID (a random
equal split) or non-IID (per class, client shares drawn from Dirichlet(alpha); small alpha gives
clients few classes, as in Hsu et al., arXiv 1909.06335).

Models (``build_model``):
  * ``"mlp"``: 64-64-10 (4.8 k parameters),
  * ``"cnn"``: two 3x3 conv layers, max-pool, 64-unit head (~40 k parameters),
  * ``"mlp-10m"``: 64-3072-3072-10 (9.7 M parameters, 39 MB of float32), for the cost tables.

Local training is :func:`qhybrid.train.train` (AdamW, fixed steps) so every part shares one loop.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pqc_fl.config import MODELS, LocalTrainConfig
from qhybrid.errors import QHybridError
from qhybrid.train import TrainConfig, make_loader, seed_everything, train

__all__ = [
    "MODELS",
    "LocalTrainConfig",
    "build_model",
    "digits",
    "evaluate",
    "local_train",
    "num_parameters",
    "partition",
]


@functools.cache
def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: pixels scaled to [0, 1] as (N, 1, 8, 8) float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )

    def t(a: Any) -> torch.Tensor:
        return torch.tensor(a / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)

    return t(x_tr), torch.tensor(y_tr), t(x_te), torch.tensor(y_te)


def partition(
    labels: torch.Tensor,
    num_clients: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Indices of each client's examples.

    Args:
        labels: (N,) integer class labels.
        num_clients: how many clients share the data.
        scheme: ``"iid"`` (random equal split) or ``"dirichlet"`` (label skew, per-class client
            shares ~ Dirichlet(alpha)); every client gets at least one example.
        alpha: Dirichlet concentration; smaller = more skewed.
        seed: fixes the split.
    """
    n = len(labels)
    if not 1 <= num_clients <= n:
        raise QHybridError(f"num_clients={num_clients} must lie in [1, {n}] for {n} examples")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), num_clients)]
    if scheme != "dirichlet":
        raise QHybridError(f"partition scheme {scheme!r} is not 'iid' or 'dirichlet'")
    if not alpha > 0:
        raise QHybridError(f"alpha={alpha} must be > 0")
    y = labels.numpy()
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    # give empty clients one example from the largest client, so everyone can train
    for k in range(num_clients):
        if not parts[k]:
            donor = max(range(num_clients), key=lambda j: len(parts[j]))
            parts[k].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),  # (B, 16, 8, 8)
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 4, 4)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "cnn":
        return _CNN()
    if name == "mlp-10m":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 3072),
            nn.ReLU(),
            nn.Linear(3072, 3072),
            nn.ReLU(),
            nn.Linear(3072, 10),
        )
    raise QHybridError(f"model {name!r} is not one of {MODELS}")


def num_parameters(model: nn.Module) -> int:
    """The model's parameter count."""
    return sum(p.numel() for p in model.parameters())


def _loss(m: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    logits = m(batch[0])
    loss = nn.functional.cross_entropy(logits, batch[1])
    return loss, {"acc": float((logits.argmax(-1) == batch[1]).float().mean())}


def local_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalTrainConfig,
    *,
    seed: int,
) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
    """Train ``model`` in place on (x, y) with :func:`qhybrid.train.train`.

    Returns:
        ``(state, num_examples, metrics)``: the new weights as float32 numpy arrays (zero-copy
        views of the model's CPU tensors), the local dataset size and ``train_loss``.
    """
    seed_everything(seed)
    ds = torch.utils.data.TensorDataset(x, y)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    cfg = TrainConfig(
        max_steps=config.steps,
        log_every=max(1, config.steps),
        progress=False,
        device="cpu",
        seed=seed,
        clip_grad_norm=None,
    )
    result = train(model, make_loader(ds, config.batch_size, seed=seed), _loss, opt, cfg)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return state, len(ds), {"train_loss": float(result.loss)}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Test loss and accuracy."""
    model.eval()
    logits = model(x)
    return {
        "test_loss": float(nn.functional.cross_entropy(logits, y)),
        "test_acc": float((logits.argmax(-1) == y).float().mean()),
    }


def load_state(model: nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Copy numpy weights into ``model`` (names must match exactly)."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
