"""In-process federated runs: FedAvg maths, signing leaves training unchanged, attacks never aggregate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pqc_fl.attacks import RunAttack
from pqc_fl.config import LocalTrainConfig, Model
from pqc_fl.simulate import FLConfig, fedavg, run_inprocess
from pqc_fl.task import build_model, digits, num_parameters, partition

FAST = FLConfig(rounds=2, local=LocalTrainConfig(steps=5))


def test_fedavg_matches_hand_computation() -> None:
    a = {"w": np.array([1.0, 2.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32)}
    out = fedavg([(a, 1), (b, 3)])
    np.testing.assert_allclose(out["w"], (a["w"] * 1 + b["w"] * 3) / 4, rtol=1e-6)
    # the Flower strategies the engine aggregates with agree with the hand computation
    from pqc_fl.strategy import aggregate_updates, make_strategy

    c = {"w": np.array([100.0, -50.0], np.float32)}
    ups = [("c0", a, 1), ("c1", b, 3), ("c2", c, 1)]
    avg = aggregate_updates(make_strategy("fedavg", 3), 1, ups)
    np.testing.assert_allclose(avg["w"].numpy(), (a["w"] + 3 * b["w"] + c["w"]) / 5, rtol=1e-6)
    med = aggregate_updates(make_strategy("fedmedian", 3), 1, ups)
    np.testing.assert_allclose(med["w"].numpy(), [3.0, 2.0])  # coordinate-wise median
    krum = aggregate_updates(make_strategy("krum", 3, num_malicious=1), 1, ups)
    # Krum with f=1 of n=3 scores each update by its n-f-2 = 1 nearest neighbour: a or b wins
    assert any(np.array_equal(krum["w"].numpy(), x["w"]) for x in (a, b))


def test_partitions_cover_the_data_once() -> None:
    _, y, _, _ = digits(0)
    for scheme in ("iid", "dirichlet"):
        parts = partition(y, 7, scheme=scheme, alpha=0.1, seed=3)
        joined = np.concatenate(parts)
        assert len(joined) == len(y) == len(np.unique(joined)) and min(map(len, parts)) >= 1
    skew = partition(y, 5, scheme="dirichlet", alpha=0.05, seed=0)
    assert max(len(np.unique(y[p].numpy())) for p in skew) < 10 or len(skew[0]) < 200


def test_models_and_sizes() -> None:
    assert num_parameters(build_model("mlp")) == 64 * 64 + 64 + 64 * 10 + 10
    assert 30_000 < num_parameters(build_model("cnn")) < 60_000
    assert build_model("cnn")(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_signing_leaves_the_trained_model_bitwise_unchanged(model: Model) -> None:
    signed = run_inprocess(replace(FAST, model=model, sign=True))
    plain = run_inprocess(replace(FAST, model=model, sign=False))
    assert [r["test_acc"] for r in signed.rounds] == [r["test_acc"] for r in plain.rounds]
    assert all(np.array_equal(signed.state[k], plain.state[k]) for k in plain.state)
    assert signed.rejections == [] and all(r["accepted"] == 3 for r in signed.rounds)
    assert signed.rounds[-1]["update_bytes"] > plain.rounds[-1]["update_bytes"]


@pytest.mark.parametrize(
    ("attack", "reason", "rounds_hit"),
    [("tensor_bitflip", "digest_mismatch", [1, 2]), ("inflate_examples", "bad_signature", [1, 2]),
     ("replay_previous_round", "round_mismatch", [2]), ("relabel", "key_client_mismatch", [1, 2]),
     ("strip_signature", "bad_signature_length", [1, 2])],
)  # fmt: skip
def test_attacker_updates_are_rejected_and_never_aggregated(
    attack: RunAttack, reason: str, rounds_hit: list[int]
) -> None:
    r = run_inprocess(replace(FAST, attack=attack, attacker=1, partition="dirichlet"))
    assert [x["round"] for x in r.rejections] == rounds_hit
    assert {x["reason"] for x in r.rejections} == {reason}
    assert {x["node"] for x in r.rejections} == {"node-1"}
    assert [x["accepted"] for x in r.rounds] == [2 if i in rounds_hit else 3 for i in (1, 2)]
