"""The strategy wrapper: unit checks on Flower messages, and real Flower simulations (Ray backend)
with the wrapper around FedAvg, FedMedian and Krum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, MessageType, Metadata, RecordDict

from pqc_fl.attacks import RUN_ID, AttackWorld, ByzantineAttack, RunAttack, make_world, sample_state
from pqc_fl.config import LocalTrainConfig, StrategyName
from pqc_fl.keys import provision_keys
from pqc_fl.policy import schema_of
from pqc_fl.server import QuorumError, RoundVerifier
from pqc_fl.simulate import FLConfig, run_inprocess
from pqc_fl.strategy import VerifyingStrategy, make_strategy
from pqc_fl.verify import Reason

pytest.importorskip("ray")


def _reply(content: RecordDict, node: int) -> Message:
    meta = Metadata(0, "", node, 0, "", "5", 0.0, 3600.0, MessageType.TRAIN)
    return Message(content=content, metadata=meta)  # type: ignore[call-overload]


def _strategy(
    w: AttackWorld, *, min_accepted: float | int = 0.5, abort: bool = False
) -> VerifyingStrategy:
    verifier = RoundVerifier(
        w.registry,
        RUN_ID,
        schema_of(w.state),
        w.policy,
        min_accepted=min_accepted,
        abort_below_quorum=abort,
    )
    return VerifyingStrategy(make_strategy("fedavg", 2), verifier)


def test_wrapper_rejects_unsigned_malformed_and_relabelled_replies_with_their_reason() -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from pqc_fl.strategy import update_to_content

    w = make_world()
    b_state = sample_state(3)
    good_a = update_to_content(w.honest())
    good_b = update_to_content(w.honest(key=w.b, state=b_state, node="7"))
    unsigned = RecordDict({"arrays": good_a["arrays"], "metrics": good_a["metrics"]})
    extra = update_to_content(w.honest())
    extra["more"] = ArrayRecord()
    inflated = update_to_content(w.honest(node="10"))
    inflated["metrics"] = MetricRecord({**dict(inflated["metrics"]), "num-examples": 10**6})
    garbled = update_to_content(w.honest())
    garbled["pqc"] = ConfigRecord({"envelope": b"{", "signature": b""})
    retyped = update_to_content(w.honest())
    retyped["arrays"] = MetricRecord({"x": 1.0})  # right name, wrong record type
    many = update_to_content(w.honest())
    many["arrays"] = ArrayRecord({f"t{i}": Array(np.zeros(1, np.float32)) for i in range(5000)})
    s = _strategy(w, min_accepted=1)
    replies = [
        _reply(c, n)
        for c, n in [
            (good_b, 7),
            (unsigned, 8),
            (extra, 9),
            (inflated, 10),
            (garbled, 11),
            (retyped, 12),
            (many, 13),
        ]
    ]
    arrays, _ = s.aggregate_train(5, replies)
    got = [(r["node"], r["reason"]) for r in s.rejections]
    assert got == [
        ("8", "unsigned"),
        ("9", "malformed"),
        ("10", "bad_signature"),
        ("11", "malformed"),
        ("12", "malformed"),
        ("13", "malformed"),
    ]
    # the aggregate is exactly b's verified weights (the only accepted reply)
    for k, v in b_state.items():
        np.testing.assert_array_equal(arrays[k].numpy(), v)
    assert s.round_stats[-1]["accepted"] == 1


def test_two_nodes_claiming_one_client_are_both_rejected_and_binding_holds() -> None:
    w = make_world()
    from pqc_fl.strategy import update_to_content

    s = _strategy(w, min_accepted=1)
    one = update_to_content(w.honest(node="1"))
    two = update_to_content(w.honest(node="2", state=sample_state(5)))
    b = update_to_content(w.honest(key=w.b, node="3"))
    arrays, _ = s.aggregate_train(5, [_reply(one, 1), _reply(two, 2), _reply(b, 3)])
    assert [(r["node"], r["reason"]) for r in s.rejections] == [
        ("1", "duplicate_submission"),
        ("2", "duplicate_submission"),
    ]
    assert arrays is not None


def test_quorum_skips_or_aborts_a_round_with_too_few_accepted_updates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pqc_fl.strategy import update_to_content

    w = make_world()
    bad = update_to_content(w.honest(node="1", num_examples=10**9))  # over the registered cap
    good = update_to_content(w.honest(key=w.b, node="2"))
    s = _strategy(w, min_accepted=0.9)
    assert s.aggregate_train(5, [_reply(bad, 1), _reply(good, 2)]) == (None, None)
    assert s.round_stats[-1]["quorum_met"] is False and "below the quorum" in caplog.text
    assert s.rejections[0]["reason"] == Reason.EXAMPLES_OVER_CAP
    s = _strategy(w, min_accepted=2, abort=True)
    with pytest.raises(QuorumError, match="1 of 2 updates"):
        s.aggregate_train(5, [_reply(bad, 1), _reply(good, 2)])


# (strategy, outsider attack by client 1, Byzantine attack by client 2 with its valid key)
FLOWER_CASES = [("fedavg", "tensor_bitflip", "none"), ("fedmedian", "none", "sign_flip"),
                ("krum", "none", "non_finite")]  # fmt: skip


@pytest.mark.parametrize(("strategy", "attack", "byzantine"), FLOWER_CASES)
def test_flower_simulation_wraps_the_strategy(
    tmp_path: Path, strategy: StrategyName, attack: RunAttack, byzantine: ByzantineAttack
) -> None:
    # Prepare: keys provisioned out of band; for FedAvg client 1 flips a weight bit after signing
    cfg = FLConfig(
        num_clients=3,
        rounds=2,
        local=LocalTrainConfig(steps=5),
        attack=attack,
        attacker=1,
        partition="dirichlet",
        alpha=1.0,
        strategy=strategy,
        byzantine=byzantine,
        num_byzantine=int(byzantine != "none"),
    )
    provision_keys(tmp_path / "keys", cfg.num_clients, cfg.scheme, max_examples=10_000)
    from pqc_fl.flower_app import run_flower_simulation

    # Execute
    summary = run_flower_simulation(cfg, tmp_path / "keys", tmp_path / "out.json")

    # Assert: the forged reply is rejected in both rounds with its reason, the others aggregated
    if byzantine == "non_finite":  # client 2 signs NaN weights with its own key: refused
        assert [(r["round"], r["client"], r["reason"]) for r in summary["rejections"]] == [
            (1, "client-2", "non_finite"),
            (2, "client-2", "non_finite"),
        ]
    elif attack == "none":  # sign-flipped but well-formed: accepted, the median absorbs it
        assert summary["rejections"] == []
        assert [(r["accepted"], r["rejected"]) for r in summary["rounds"]] == [(3, 0), (3, 0)]
    else:
        assert [(r["round"], r["client"], r["reason"]) for r in summary["rejections"]] == [
            (1, "client-1", "digest_mismatch"),
            (2, "client-1", "digest_mismatch"),
        ]
        assert [(r["accepted"], r["rejected"]) for r in summary["rounds"]] == [(2, 1), (2, 1)]
    # and the global model is exactly what the in-process engine computes with the same strategy
    ref = run_inprocess(cfg)
    for name, value in summary["final_state"].items():
        np.testing.assert_allclose(
            np.asarray(value, np.float32), ref.state[name], rtol=1e-5, atol=1e-6
        )
    assert summary["rounds"][-1]["test_acc"] == pytest.approx(ref.rounds[-1]["test_acc"], abs=1e-6)


def test_the_flower_project_file_ships_in_the_package_and_is_not_a_preset() -> None:
    import importlib
    import tomllib
    from types import SimpleNamespace

    from pqc_fl.flower_app import flower_project_file, settings
    from qhybrid.config import presets

    doc = tomllib.loads(flower_project_file().read_text(encoding="utf-8"))
    app = doc["tool"]["flwr"]["app"]
    for ref in app["components"].values():
        module, _, name = ref.partition(":")
        assert hasattr(importlib.import_module(module), name)
    # its run config is a valid FLConfig (the same declarations check it)
    cfg, key_dir = settings(SimpleNamespace(run_config=app["config"]), FLConfig(), None)  # type: ignore[arg-type]
    assert (
        cfg.num_clients == app["config"]["num-clients"] and str(key_dir) == app["config"]["key-dir"]
    )
    assert not [n for n in presets() if "flower" in n]  # `qhybrid presets` lists configs only
