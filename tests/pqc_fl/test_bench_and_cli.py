"""Cost measurements and the `qhybrid fl` commands on tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pqc_fl import bench
from qhybrid.cli import main


def test_time_call_reports_ordered_quartiles() -> None:
    t = bench.time_call(lambda: sum(range(1000)), budget_s=0.01)
    assert t["n"] >= 3 and 0 < t["q1"] <= t["median"] <= t["q3"]


def test_bandwidth_is_signature_plus_envelope() -> None:
    (row,) = bench.bandwidth_table(["ed25519"], model_params=[("m", 1000)])
    assert row["sig_B"] == 64 and 64 < row["added_B"] < 64 + 600
    # the bare update is 4000 bytes of float32 plus its ~30-byte tensor record
    assert 100 * row["added_B"] / 4100 < row["m_pct"] < 100 * row["added_B"] / 4000


def test_round_cost_and_throughput_rows_are_consistent() -> None:
    (row,) = bench.round_cost_table(["mlp"], [3], local_steps=2)
    parts = row["client_train_s"] + row["client_digest_s"] + row["client_sign_s"]
    parts += row["server_parse_s"] + row["server_verify_s"] + row["server_hash_s"]
    parts += row["server_aggregate_s"]
    assert np.isclose(parts, row["round_s"]) and 0 < row["crypto_share_pct"] < 100
    (tp,) = bench.verify_throughput("ed25519", n_updates=40, workers=(1,), n_keys=4, repeats=2)
    assert tp["updates"] == 40 and tp["updates_per_s"] > 0 and tp["speedup"] == 1.0


def test_importing_the_package_and_cli_module_is_light() -> None:
    code = (
        "import sys, pqc_fl, pqc_fl.commands; print('torch' in sys.modules, 'flwr' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cli_keys_and_run(tmp_path: Path, capsys: object) -> None:
    assert (
        main(["fl", "keys", "--dir", str(tmp_path / "k"), "--clients", "2", "--max-examples", "50"])
        == 0
    )
    assert (tmp_path / "k" / "registry.json").exists()
    rc = main(
        [
            "fl",
            "run",
            "--out",
            str(tmp_path / "runs"),
            "--set",
            "rounds=1",
            "--set",
            "local.steps=2",
            "--set",
            "num_clients=2",
        ]
    )
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["signing_changes_nothing"] is True
    assert "bitwise-identical" in (run / "report.md").read_text()
    assert main(["fl", "run", "--out", str(tmp_path / "runs"), "--set", 'scheme="dilithium9"']) == 2
