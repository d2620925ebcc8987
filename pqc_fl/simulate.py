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

from pqc_fl.attacks import tamper
from pqc_fl.config import FLConfig
from pqc_fl.envelope import (
    SignedUpdate,
    canonical_tensors,
    parse_tensor_stream,
    sign_update,
    tensor_stream,
    verify_update,
)
from pqc_fl.keys import KeyRegistry, generate_client_key
from pqc_fl.task import (
    build_model,
    digits,
    evaluate,
    load_state,
    local_train,
    partition,
)

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
    return seed * 1_000_003 + round * 1009 + client


def run_inprocess(
    config: FLConfig, *, on_round: Callable[[dict[str, Any]], None] | None = None
) -> FLResult:
    """Run ``config`` in this process, client by client, and return per-round records."""
    torch.set_num_threads(1)  # fair timings; clients are meant to be separate machines
    x_tr, y_tr, x_te, y_te = digits(config.seed)
    parts = partition(
        y_tr, config.num_clients, scheme=config.partition, alpha=config.alpha, seed=config.seed
    )
    keys = [generate_client_key(f"client-{i}", config.scheme) for i in range(config.num_clients)]
    registry = KeyRegistry()
    for k in keys:
        registry.register_client_key(k)
    run_id = f"inprocess-{secrets.token_hex(8)}"
    model = build_model(config.model, config.seed)
    global_state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    result = FLResult()
    previous: dict[int, SignedUpdate] = {}
    seen: set[str] = set()
    for rnd in range(1, config.rounds + 1):
        blobs: list[tuple[int, bytes, dict[str, float]]] = []
        for i, idx in enumerate(parts):
            load_state(model, global_state)
            t0 = time.perf_counter()
            state, n, metrics = local_train(
                model, x_tr[idx], y_tr[idx], config.local, seed=client_seed(config.seed, rnd, i)
            )
            t = {"train": time.perf_counter() - t0, "digest": 0.0, "sign": 0.0}
            if config.sign:
                k = keys[i]
                u = sign_update(
                    state, scheme=config.scheme, secret_key=k.secret_key, key_id=k.key_id,
                    client_id=k.client_id, run_id=run_id, round=rnd, num_examples=n,
                    metrics=metrics, mode=config.mode,
                )  # fmt: skip
                t.update(u.timings)
                if config.attack != "none" and i == config.attacker:
                    honest = u
                    u = tamper(u, config.attack, previous=previous.get(i), victim=keys[0].client_id)
                    previous[i] = honest
                t2 = time.perf_counter()
                blob = u.to_bytes()
            else:
                t2 = time.perf_counter()
                blob = np.int64(n).tobytes() + b"".join(
                    bytes(c) for c in tensor_stream(canonical_tensors(state))
                )
            t["serialize"] = time.perf_counter() - t2
            t["total"] = time.perf_counter() - t0
            t["bytes"] = float(len(blob))
            blobs.append((i, blob, t))
        accepted: list[tuple[dict[str, np.ndarray], int]] = []
        server = {"parse": 0.0, "verify": 0.0, "hash": 0.0, "aggregate": 0.0}
        for i, blob, _ in blobs:
            t0 = time.perf_counter()
            if config.sign:
                u = SignedUpdate.from_bytes(blob)
                server["parse"] += time.perf_counter() - t0
                v = verify_update(u, registry=registry, run_id=run_id, round=rnd, seen_nonces=seen)
                server["verify"] += v.verify_seconds
                server["hash"] += v.hash_seconds
                if not v.ok:
                    result.rejections.append(
                        {"round": rnd, "client": f"client-{i}", "claimed": v.client_id,
                         "reason": str(v.reason), "detail": v.detail}
                    )  # fmt: skip
                    continue
                accepted.append((dict(u.tensors), u.envelope.num_examples))
            else:
                n = int(np.frombuffer(blob[:8], np.int64)[0])
                accepted.append((parse_tensor_stream(blob[8:]), n))
                server["parse"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if accepted:
            global_state = fedavg(accepted)
        server["aggregate"] = time.perf_counter() - t0
        load_state(model, global_state)
        ev = evaluate(model, x_te, y_te)
        clients = [t for _, _, t in blobs]
        rec: dict[str, Any] = {
            "round": rnd, **ev, "accepted": len(accepted), "rejected": len(blobs) - len(accepted),
            **{f"client_{k}_s": float(np.median([c[k] for c in clients]))
               for k in ("train", "digest", "sign", "serialize", "total")},
            "update_bytes": float(np.median([c["bytes"] for c in clients])),
            **{f"server_{k}_s": v for k, v in server.items()},
        }  # fmt: skip
        result.rounds.append(rec)
        logger.info("round %d: %s", rnd, rec)
        if on_round:
            on_round(rec)
    result.state = global_state
    return result
