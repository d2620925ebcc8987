"""The same loop under torchrun: two gloo processes end with identical weights equal to one process
trained on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_process_ddp_equals_single_process_on_the_global_batch(tmp_path):
    # Prepare / Execute: 2 ranks x batch 8 under torchrun, and 1 process x batch 16.
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(WORKER),
            str(tmp_path / "ddp"),
            "8",
        ],
        tmp_path,
    )
    _run([sys.executable, str(WORKER), str(tmp_path / "single"), "16"], tmp_path)
    # Assert
    rank0 = torch.load(tmp_path / "ddp.rank0")
    rank1 = torch.load(tmp_path / "ddp.rank1")
    single = torch.load(tmp_path / "single.rank0")
    initial = nn_init()
    for name in single:
        assert torch.equal(rank0[name], rank1[name]), name  # DDP keeps replicas identical
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(single[name], initial[name])  # training actually moved the weights
    # The logged loss is the mean over ranks (equal halves: the global batch's mean), not rank 0's.
    names = ("ddp.rank0", "ddp.rank1", "single.rank0")
    losses = {k: json.loads((tmp_path / f"{k}.losses").read_text()) for k in names}
    assert losses["ddp.rank0"] == losses["ddp.rank1"] and len(losses["ddp.rank0"]) == 12
    np.testing.assert_allclose(losses["ddp.rank0"], losses["single.rank0"], rtol=1e-5)
    # One run folder per run: rank 1 wrote into a scratch folder, not into --out.
    assert len(list((tmp_path / "ddp.runs").iterdir())) == 1


def nn_init() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return {k: v.clone() for k, v in model.state_dict().items()}
