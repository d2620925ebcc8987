"""Federated runs: one config, two engines (Flower's simulation engine, or a deterministic in-process loop).

Both engines run the same protocol: every round each client loads the global weights, trains
locally with :func:`qhybrid.train.train`, signs its update (:func:`~pqc_fl.envelope.sign_update`),
and the server verifies every update (:func:`~pqc_fl.envelope.verify_update`) and FedAvg-aggregates
only the verified ones (McMahan et al., arXiv 1602.05629: ``w = sum_k n_k w_k / sum_k n_k``).

The in-process engine serialises every update to bytes and parses it back on the "server" side, so
it exercises the wire format and measures every step (train, digest, sign, serialise, parse,
verify, hash, aggregate) per client and round; it has no Ray start-up cost and is bitwise
deterministic, which is what lets a test show that signing leaves accuracy unchanged.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pqc_fl.attacks import byzantine_state, tamper
from pqc_fl.config import FLConfig
from pqc_fl.envelope import canonical_tensors, tensor_stream
from pqc_fl.keys import ClientKey, KeyRegistry, generate_client_key
from pqc_fl.policy import ServerPolicy, schema_of
from pqc_fl.server import RoundVerifier
from pqc_fl.sign import sign_update
from pqc_fl.task import (
    build_model,
    digits,
    evaluate,
    load_state,
    local_train,
    partition,
)
from pqc_fl.wire import SignedUpdate, parse_tensor_stream

__all__ = ["FLConfig", "FLResult", "client_seed", "fedavg", "run_inprocess"]

logger = logging.getLogger(__name__)


@dataclass
class FLResult:
    """Per-round records and the final global weights."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round (NaN for a run without rounds)."""
        return float(self.rounds[-1]["test_acc"]) if self.rounds else float("nan")


def fedavg(updates: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Example-weighted mean of states, accumulated like Flower's ``aggregate_arrayrecords``."""
    total = sum(n for _, n in updates)
    out: dict[str, np.ndarray] = {}
    for state, n in updates:
        w = n / total
        for k, v in state.items():
            if k in out:
                out[k] += v * w
            else:
                out[k] = v * w
    return out


def client_seed(seed: int, round: int, client: int) -> int:
    """The seed of one client's local training in one round (both engines use it, so they
    train identically)."""
    return seed * 1_000_003 + round * 1009 + client


def run_inprocess(
    config: FLConfig, *, on_round: Callable[[dict[str, Any]], None] | None = None
) -> FLResult:
    """Run ``config`` in this process, client by client, and return per-round records.

    The server side is the real one: a :class:`~pqc_fl.server.RoundVerifier` checks the round's
    wire bytes, and the Flower strategy ``config.strategy`` aggregates the verified updates
    (:func:`~pqc_fl.strategy.aggregate_updates`). Byzantine clients (the last
    ``config.num_byzantine``) sign what :func:`~pqc_fl.attacks.byzantine_state` makes of their
    update, with their own valid keys.
    """
    from pqc_fl.strategy import aggregate_updates

    torch.set_num_threads(1)  # fair timings; clients are meant to be separate machines
    fed = _Federation.start(config)
    result = FLResult()
    for rnd in range(1, config.rounds + 1):
        blobs: list[tuple[int, bytes, dict[str, float]]] = []
        for i in range(config.num_clients):
            blobs += _client_turn(fed, i, rnd)
        for _, blob, t in blobs:
            t["total"] = t["train"] + t["digest"] + t["sign"] + t["serialize"]
            t["bytes"] = float(len(blob))
        server, accepted, met = _server_round(config, fed.verifier, rnd, blobs)
        t0 = time.perf_counter()
        if met and accepted:
            arrays = aggregate_updates(fed.strategy, rnd, accepted)
            if arrays is not None:
                fed.global_state = {k: np.array(a.numpy()) for k, a in arrays.items()}
        server["aggregate"] = time.perf_counter() - t0
        load_state(fed.model, fed.global_state)
        rec = _round_record(rnd, evaluate(fed.model, fed.x_te, fed.y_te), blobs, accepted, met)
        result.rounds.append({**rec, **{f"server_{k}_s": v for k, v in server.items()}})
        logger.info("round %d: %s", rnd, result.rounds[-1])
        if on_round:
            on_round(result.rounds[-1])
    result.rejections = fed.verifier.rejections
    result.state = fed.global_state
    return result


@dataclass
class _Federation:
    """Everything one in-process run holds: data, partitions, keys, model, verifier, strategy."""

    config: FLConfig
    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_te: torch.Tensor
    y_te: torch.Tensor
    parts: list[np.ndarray]
    keys: list[ClientKey]
    model: torch.nn.Module
    global_state: dict[str, np.ndarray]
    verifier: RoundVerifier
    strategy: Any
    byzantine: set[int]
    previous: dict[int, SignedUpdate] = field(default_factory=dict)  # for replay attacks

    @classmethod
    def start(cls, config: FLConfig) -> _Federation:
        """Split the data, register every client's key, build the model and the server."""
        from pqc_fl.strategy import make_strategy, quiet_flwr

        x_tr, y_tr, x_te, y_te = digits(config.seed)
        n = config.num_clients
        parts = partition(y_tr, n, scheme=config.partition, alpha=config.alpha, seed=config.seed)
        keys = [generate_client_key(f"client-{i}", config.scheme) for i in range(n)]
        registry = KeyRegistry()
        for k, idx in zip(keys, parts, strict=True):
            registry.register_client_key(k, max_examples=len(idx))
        model = build_model(config.model, config.seed)
        global_state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        verifier = RoundVerifier(
            registry,
            f"inprocess-{secrets.token_hex(8)}",
            schema_of(global_state),
            ServerPolicy.only(config.scheme),
            min_accepted=float(config.min_accepted),  # a fraction
        )
        with quiet_flwr():  # Flower warns that client-side evaluation is off: it is, by design
            strategy = make_strategy(config.strategy, n, num_malicious=config.num_byzantine)
        byzantine = set(range(n - config.num_byzantine, n))
        return cls(
            config, x_tr, y_tr, x_te, y_te, parts, keys, model, global_state, verifier, strategy,
            byzantine,
        )  # fmt: skip


def _client_turn(fed: _Federation, i: int, rnd: int) -> list[tuple[int, bytes, dict[str, float]]]:
    """Client ``i`` trains from the global weights and sends its (signed) update(s) as bytes,
    with its timings."""
    config, idx = fed.config, fed.parts[i]
    load_state(fed.model, fed.global_state)
    t0 = time.perf_counter()
    y = fed.y_tr[idx]
    if i in fed.byzantine and config.byzantine == "label_flip":
        y = 9 - y  # every label mapped to another class
    state, n, metrics = local_train(
        fed.model, fed.x_tr[idx], y, config.local, seed=client_seed(config.seed, rnd, i)
    )
    t = {"train": time.perf_counter() - t0, "digest": 0.0, "sign": 0.0}
    kind = config.byzantine if i in fed.byzantine else "none"
    state = byzantine_state(kind, state, fed.global_state)  # scale / sign_flip hit both paths
    t2 = time.perf_counter()
    if not config.sign:
        blob = np.int64(n).tobytes() + b"".join(
            bytes(c) for c in tensor_stream(canonical_tensors(state))
        )
        t["serialize"] = time.perf_counter() - t2
        return [(i, blob, t)]
    signed = _client_updates(
        config, fed.keys[i], i, rnd, fed.verifier.run_id, kind, state, n, metrics
    )
    t.update(signed[0].timings)
    if config.attack != "none" and i == config.attacker:
        honest = signed[0]
        victim = fed.keys[0].client_id
        signed[0] = tamper(honest, config.attack, previous=fed.previous.get(i), victim=victim)
        fed.previous[i] = honest
    t2 = time.perf_counter()
    out = [(i, u.to_bytes(), t) for u in signed]
    t["serialize"] = (time.perf_counter() - t2) / len(signed)
    return out


def _round_record(
    rnd: int,
    ev: dict[str, float],
    blobs: list[tuple[int, bytes, dict[str, float]]],
    accepted: list[Any],
    met: bool,
) -> dict[str, Any]:
    """A round's record: test metrics, accepted / rejected counts, median client timings."""
    clients = [t for _, _, t in blobs]
    return {
        "round": rnd,
        **ev,
        "accepted": len(accepted),
        "rejected": len(blobs) - len(accepted),
        "quorum_met": met,
        **{
            f"client_{k}_s": float(np.median([c[k] for c in clients]))
            for k in ("train", "digest", "sign", "serialize", "total")
        },
        "update_bytes": float(np.median([c["bytes"] for c in clients])),
    }


def _client_updates(
    config: FLConfig,
    key: ClientKey,
    i: int,
    rnd: int,
    run_id: str,
    kind: str,
    state: dict[str, np.ndarray],
    n: int,
    metrics: dict[str, float],
) -> list[SignedUpdate]:
    """The signed update(s) client ``i`` sends: one, or two for a double submission."""

    def sign(st: dict[str, np.ndarray], n_claim: int) -> SignedUpdate:
        return sign_update(
            st,
            scheme=config.scheme,
            secret_key=key.secret_key,
            key_id=key.key_id,
            client_id=key.client_id,
            run_id=run_id,
            round=rnd,
            num_examples=n_claim,
            metrics=metrics,
            mode=config.mode,
            node=f"node-{i}",
            hash=config.hash,
        )

    if kind == "inflate_examples":
        return [sign(state, 2**53)]
    if kind == "double_submission":  # the honest update and a boosted copy, both validly signed
        return [sign(state, n), sign({k: v * np.float32(2) for k, v in state.items()}, n)]
    return [sign(state, n)]


def _server_round(
    config: FLConfig, verifier: RoundVerifier, rnd: int, blobs: list[tuple[int, bytes, Any]]
) -> tuple[dict[str, float], list[tuple[str, dict[str, np.ndarray], int]], bool]:
    """Verify (or, unsigned, just parse) a round's blobs; (timings, accepted updates, quorum)."""
    t0 = time.perf_counter()
    accepted: list[tuple[str, dict[str, np.ndarray], int]] = []
    if not config.sign:
        for i, blob, _ in blobs:
            n = int(np.frombuffer(blob[:8], np.int64)[0])
            accepted.append((f"client-{i}", parse_tensor_stream(blob[8:]), n))
        return {"parse": time.perf_counter() - t0, "verify": 0.0, "hash": 0.0}, accepted, True
    verdicts, met = verifier.verify_round(rnd, [(f"node-{i}", blob) for i, blob, _ in blobs])
    for v in verdicts:
        if v.ok and v.update is not None:
            accepted.append(
                (str(v.client_id), dict(v.update.tensors), v.update.envelope.num_examples)
            )
    verify = sum(v.verify_seconds for v in verdicts)
    hash_ = sum(v.hash_seconds for v in verdicts)
    total = time.perf_counter() - t0
    return {"parse": total - verify - hash_, "verify": verify, "hash": hash_}, accepted, met
