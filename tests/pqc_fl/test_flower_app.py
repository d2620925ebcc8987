"""A real Flower simulation (Ray backend): 3 clients, 2 rounds, one client tampering after signing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pqc_fl.attacks import make_world
from pqc_fl.config import LocalTrainConfig
from pqc_fl.envelope import Reason
from pqc_fl.keys import provision_keys
from pqc_fl.simulate import FLConfig, run_inprocess

pytest.importorskip("ray")


def test_flower_simulation_verifies_signed_replies_and_drops_the_forged_one(tmp_path: Path) -> None:
    # Prepare: keys provisioned out of band, client 1 flips a weight bit after signing
    cfg = FLConfig(
        num_clients=3, rounds=2, local=LocalTrainConfig(steps=5), attack="tensor_bitflip",
        attacker=1, partition="dirichlet", alpha=1.0,
    )  # fmt: skip
    provision_keys(tmp_path / "keys", cfg.num_clients, cfg.scheme)
    from pqc_fl.flower_app import run_flower_simulation

    # Execute
    summary = run_flower_simulation(cfg, tmp_path / "keys", tmp_path / "out.json")

    # Assert: the forged reply is rejected in both rounds with its reason, the others aggregated
    assert [(r["round"], r["client"], r["reason"]) for r in summary["rejections"]] == [
        (1, "client-1", "digest_mismatch"), (2, "client-1", "digest_mismatch"),
    ]  # fmt: skip
    assert [(r["accepted"], r["rejected"]) for r in summary["rounds"]] == [(2, 1), (2, 1)]
    # and the global model is exactly what the independent in-process FedAvg computes
    ref = run_inprocess(cfg)
    for name, value in summary["final_state"].items():
        np.testing.assert_allclose(
            np.asarray(value, np.float32), ref.state[name], rtol=1e-5, atol=1e-6
        )
    assert summary["rounds"][-1]["test_acc"] == pytest.approx(ref.rounds[-1]["test_acc"], abs=1e-6)


def test_strategy_rejects_unsigned_and_malformed_replies() -> None:
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from pqc_fl.flower_app import VerifyingFedAvg, update_to_content

    w = make_world()
    strategy = VerifyingFedAvg(registry=w.registry, run_id="run-attack-suite")
    good = update_to_content(w.honest())
    v, clean = strategy.verify_content(5, good)
    assert v.ok and clean is not None and set(clean) == {"arrays", "metrics"}
    unsigned = RecordDict({"arrays": good["arrays"], "metrics": good["metrics"]})
    v, _ = strategy.verify_content(5, unsigned)
    assert v.reason == Reason.UNSIGNED
    extra = update_to_content(w.honest())
    extra["more"] = ArrayRecord()
    v, _ = strategy.verify_content(5, extra)
    assert v.reason == Reason.MALFORMED
    inflated = update_to_content(w.honest())
    inflated["metrics"] = MetricRecord({**dict(inflated["metrics"]), "num-examples": 10**6})
    v, _ = strategy.verify_content(5, inflated)
    assert v.reason == Reason.BAD_SIGNATURE
    garbled = update_to_content(w.honest())
    garbled["pqc"] = ConfigRecord({"envelope": b"{", "signature": b""})
    v, _ = strategy.verify_content(5, garbled)
    assert v.reason == Reason.MALFORMED
