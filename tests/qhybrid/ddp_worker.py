"""Trains a small MLP with qhybrid.train; run plainly or under torchrun (see test_ddp.py).

Usage: python ddp_worker.py OUT.pt PER_PROCESS_BATCH
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.runs import create_run
from qhybrid.train import TrainConfig, make_loader, train


def main(out: str, batch_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    loader = make_loader(torch.utils.data.TensorDataset(x, y), batch_size, seed=5, drop_last=True)
    result = train(
        model,
        loader,
        lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
        TrainConfig(
            max_steps=12, clip_grad_norm=None, progress=False, device="cpu", seed=3, log_every=1
        ),
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(model.state_dict(), f"{out}.rank{rank}")
    losses = [r["loss"] for r in result.history if "loss" in r]
    with open(f"{out}.rank{rank}.losses", "w", encoding="utf-8") as f:
        json.dump(losses, f)
    create_run("ddp", {"rank": rank}, root=f"{out}.runs")  # only rank 0 writes into root
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
