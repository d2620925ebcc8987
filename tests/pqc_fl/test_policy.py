"""Server policy, replay guard and round verifier: hostile configuration, insider runs end to end."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pqc_fl.attacks import (
    INTEGRITY_ATTACKS,
    ByzantineAttack,
    byzantine_state,
    make_world,
    sample_state,
)
from pqc_fl.byzantine import EXPECTED_REASON
from pqc_fl.config import LocalTrainConfig
from pqc_fl.keys import KeyRegistryError, provision_keys
from pqc_fl.policy import ReplayGuard, ServerPolicy, schema_difference, schema_of, value_problem
from pqc_fl.schemes import SchemeError
from pqc_fl.server import RoundVerifier
from pqc_fl.simulate import FLConfig, run_inprocess
from qhybrid.errors import QHybridError


def test_default_policy_is_post_quantum_only_and_bad_policies_name_the_fix() -> None:
    p = ServerPolicy()
    assert "ml-dsa-44" in p.allowed_schemes and "ed25519" not in p.allowed_schemes
    assert ServerPolicy.only("FN-DSA-512").allowed_schemes == {"falcon-512"}  # aliases resolve
    with pytest.raises(SchemeError, match="unknown signature scheme"):
        ServerPolicy.only("rsa-512")
    with pytest.raises(QHybridError, match="non-empty set"):
        ServerPolicy(allowed_schemes="ml-dsa-44")  # type: ignore[arg-type]
    for bad in ({"max_records": 0}, {"max_abs": float("nan")}, {"allowed_modes": {"sha"}}):
        with pytest.raises(QHybridError):
            ServerPolicy(**bad)  # type: ignore[arg-type]
    w = make_world()
    for m in (-1, 1.5, True, "3"):
        with pytest.raises(QHybridError, match="min_accepted"):
            RoundVerifier(w.registry, "r", None, min_accepted=m)  # type: ignore[arg-type]
    with pytest.raises(KeyRegistryError, match="2 max_examples for 3 clients"):
        provision_keys("/nonexistent/never-written", 3, max_examples=[1, 2])


def test_schema_and_value_checks_against_an_independent_computation() -> None:
    s = sample_state(0)
    schema = schema_of(s)
    assert schema == {k: (v.dtype.str, v.shape) for k, v in s.items()}
    assert schema_difference(schema, s) == ""
    assert "extra" in schema_difference(schema, {**s, "x": np.zeros(1, np.float32)})
    assert "<f8" in schema_difference(schema, {**s, "0.bias": s["0.bias"].astype(np.float64)})
    assert value_problem(s.items(), 1e6) is None
    top = float(max(np.abs(v).max() for v in s.values()))
    assert (
        value_problem(s.items(), top) is None
        and value_problem(s.items(), top * 0.99) == "out_of_range"
    )
    for bad in (np.nan, np.inf, -np.inf):
        t = s["0.weight"].copy()
        t[3, 5] = bad
        assert value_problem({**s, "0.weight": t}.items(), None) == "non_finite"
    g = {k: np.zeros_like(v) for k, v in s.items()}
    flipped = byzantine_state("sign_flip", s, g)
    np.testing.assert_allclose(flipped["0.weight"], -4 * s["0.weight"], rtol=1e-6)


def test_replay_guard_binds_clients_and_nodes_per_run() -> None:
    g = ReplayGuard()
    assert g.check("r", 1, "a", "n1", "7") == "ok"
    g.admit("r", 1, "a", "n1", "7")
    assert g.check("r", 1, "a", "n1", "7") == "replay"
    assert g.check("r", 1, "a", "n2", "7") == "duplicate_submission"
    assert g.check("r", 2, "a", "n3", "8") == "node_mismatch"  # a is bound to node 7
    assert g.check("r", 2, "b", "n4", "7") == "node_mismatch"  # node 7 speaks for a
    assert g.check("r", 2, "a", "n5", "7") == "ok"
    assert g.check("other-run", 1, "a", "n1", "8") == "ok"  # bindings are per run


@pytest.mark.parametrize("attack", INTEGRITY_ATTACKS)
def test_insider_integrity_attacks_never_reach_the_model(
    attack: ByzantineAttack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    base = FLConfig(num_clients=5, rounds=2, local=LocalTrainConfig(steps=3))
    clean = run_inprocess(base)
    r = run_inprocess(
        FLConfig(
            num_clients=5,
            rounds=2,
            local=LocalTrainConfig(steps=3),
            byzantine=attack,
            num_byzantine=1,
        )
    )
    per_round = 2 if attack == "double_submission" else 1
    assert [(x["node"], x["reason"]) for x in r.rejections] == [
        ("node-4", EXPECTED_REASON[attack])
    ] * (2 * per_round)
    # every integrity attack leaves the same model: the four honest clients' aggregate (as in the
    # double-submission run, where both of client 4's updates are refused), not the 5-client one
    ref = run_inprocess(
        FLConfig(
            num_clients=5,
            rounds=2,
            local=LocalTrainConfig(steps=3),
            byzantine="double_submission",
            num_byzantine=1,
        )
    )
    for k in clean.state:
        np.testing.assert_array_equal(r.state[k], ref.state[k])
        assert np.isfinite(r.state[k]).all()
    assert any(not np.array_equal(r.state[k], clean.state[k]) for k in clean.state)
    assert [x["accepted"] for x in r.rounds] == [4, 4]


def test_a_robust_strategy_resists_a_sign_flipping_insider_that_ruins_fedavg() -> None:
    cfg = FLConfig(
        num_clients=5,
        rounds=3,
        local=LocalTrainConfig(steps=10),
        byzantine="sign_flip",
        num_byzantine=1,
    )
    avg = run_inprocess(replace(cfg, strategy="fedavg"))
    med = run_inprocess(replace(cfg, strategy="fedmedian"))
    clean = run_inprocess(FLConfig(num_clients=5, rounds=3, local=LocalTrainConfig(steps=10)))
    assert avg.rejections == med.rejections == []  # valid keys, well-formed: only aggregation helps
    assert med.final_accuracy > avg.final_accuracy + 0.1
    assert med.final_accuracy > clean.final_accuracy - 0.1


def test_a_round_below_quorum_leaves_the_model_unchanged_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pqc_fl.task import build_model
    from qhybrid.cli import main

    cfg = FLConfig(
        num_clients=3,
        rounds=1,
        local=LocalTrainConfig(steps=2),
        byzantine="non_finite",
        num_byzantine=2,
        min_accepted=0.5,
    )
    r = run_inprocess(cfg)
    assert r.rounds[0]["quorum_met"] is False and r.rounds[0]["accepted"] == 1
    assert "below the quorum of 2" in caplog.text
    init = {k: v.detach().numpy() for k, v in build_model("mlp", 0).state_dict().items()}
    assert all(np.array_equal(r.state[k], init[k]) for k in init)
    out = str(tmp_path)
    assert (
        main(
            [
                "fl",
                "run",
                "--out",
                out,
                "--set",
                "rounds=1",
                "--set",
                "local.steps=2",
                "--set",
                "num_clients=3",
                "--set",
                'byzantine="non_finite"',
                "--set",
                "num_byzantine=2",
            ]
        )
        == 0
    )
    (report,) = tmp_path.glob("*/report.md")
    assert "Quorum not met in rounds [1]" in report.read_text()


# ------------------------------------------------------------------------------------------------
# an insider's view of the signed header: example counts, metrics, node claims (issue 21, item 6)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_examples", "reason"),
    [
        (0, "no_examples"),
        (-1, "malformed"),
        (-(2**70), "malformed"),
        (1001, "examples_over_cap"),  # the world registered 1,000
        (2**53, "examples_over_cap"),
        (2**53 + 1, "malformed"),  # beyond what a float64 weight can express exactly
        (2**70, "malformed"),
        (1.5, "malformed"),
        (float("nan"), "malformed"),
        ("3", "malformed"),
        (True, "malformed"),
        (None, "malformed"),
    ],
)
def test_a_validly_signed_example_count_outside_1_to_the_cap_is_refused(
    num_examples: object, reason: str
) -> None:
    from pqc_fl.attacks import _resigned

    w = make_world()
    u = _resigned(w, num_examples=num_examples)
    assert w.verify(u) == reason  # the object as a Python caller hands it over
    try:
        blob = u.to_bytes()
    except (TypeError, ValueError):  # NaN / None cannot even be encoded
        return
    assert w.verify(blob) == reason  # and the same bytes from the wire


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"train_loss": float("nan")}, "non_finite_metric"),
        ({"train_loss": float("inf")}, "non_finite_metric"),
        ({"a": 0.5, "train_loss": float("-inf")}, "non_finite_metric"),
        ({"train_loss": 1e300}, "metric_out_of_range"),
        ({"train_loss": -2e6}, "metric_out_of_range"),
        ({"train_loss": 1e6}, "ok"),  # the policy's bound itself is allowed
        ({}, "ok"),
    ],
)
def test_signed_metrics_must_be_finite_and_within_the_policy(
    metrics: dict[str, float], reason: str
) -> None:
    w = make_world()
    u = w.honest(metrics=metrics)
    assert w.verify(u) == w.verify(u.to_bytes()) == reason
    lenient = ServerPolicy.only("ml-dsa-44", max_abs_metric=None)
    from pqc_fl.verify import verify_update

    v = verify_update(
        u.to_bytes(),
        registry=w.registry,
        run_id="run-attack-suite",
        round=5,
        guard=ReplayGuard(),
        schema=None,
        policy=lenient,
        node="node-a",
    )
    assert v.reason == ("non_finite_metric" if reason == "non_finite_metric" else "ok")


def test_metric_values_that_are_not_numbers_never_reach_the_verifier_as_numbers() -> None:
    from dataclasses import replace

    from pqc_fl.sign import sign_update

    w = make_world()
    for bad in ({"loss": "0.1"}, {"loss": None}, {"loss": [1.0]}, {"loss": True}, {3: 1.0}):
        with pytest.raises(QHybridError, match="signed metrics are str -> int/float"):
            w.honest(metrics=bad)
    with pytest.raises(QHybridError, match="too large for a float64"):
        w.honest(metrics={"loss": 10**400})
    with pytest.raises(QHybridError, match="must be a mapping"):
        w.honest(metrics=[("loss", 1.0)])
    u = w.honest()
    forged = replace(u, envelope=replace(u.envelope, metrics=(("loss", "x"),)))  # type: ignore[arg-type]
    assert w.verify(forged) == "malformed"
    with pytest.raises(QHybridError, match="num_examples=0 must be an int >= 1"):
        sign_update(u.tensors, scheme="ml-dsa-44", secret_key=w.a.secret_key, key_id=w.a.key_id,
                    client_id="a", run_id="r", round=1, num_examples=0)  # fmt: skip


def test_without_a_transport_node_the_signed_node_must_be_the_keys_registered_one() -> None:
    from dataclasses import replace

    w = make_world()  # client a is registered from "node-a", client b from no node
    assert w.verify(w.honest(node="node-a"), node=None) == "ok"
    assert w.verify(w.honest(node="node-b"), node=None) == "node_mismatch"
    assert w.verify(w.honest(node=""), node=None) == "node_mismatch"  # a claims to be nobody
    b = dict(key=w.b, state=sample_state(1))
    assert w.verify(w.honest(**b, node=""), node=None) == "ok"
    assert w.verify(w.honest(**b, node="node-a"), node=None) == "node_mismatch"  # a's node
    assert w.verify(w.honest(**b, node="7"), node="7") == "ok"  # the transport's word counts
    # the registered node survives rotation and the signed registry file
    rec = w.registry.get(w.a.key_id)
    assert rec is not None and rec.node == "node-a"
    assert replace(rec, node="x").to_json()["node"] == "x"


def test_registered_nodes_survive_saving_and_rotation(tmp_path: Path) -> None:
    from pqc_fl.keys import KeyRegistry, generate_client_key, generate_server_key

    server = generate_server_key()
    reg = KeyRegistry()
    k = generate_client_key("c")
    reg.register_client_key(k, max_examples=5, node="n1")
    new = generate_client_key("c")
    reg.rotate(client_id="c", key_id=new.key_id, public_key=new.public_key, round=3)
    assert [r.node for r in reg.records()] == ["n1", "n1"]
    reg.save(tmp_path / "r.json", server_key=server)
    back = KeyRegistry.load(
        tmp_path / "r.json", server_public_key=server.public_key, server_scheme=server.scheme
    )
    assert back.records() == reg.records()
    with pytest.raises(KeyRegistryError, match="node"):
        KeyRegistry().register_client_key(k, max_examples=5, node="x" * 300)
