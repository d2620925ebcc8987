"""The Flower app: a ClientApp whose mod signs every training reply, and a FedAvg that verifies them.

Hook points (Flower 1.41 Message API):

* client: ``signing_mod`` (built by :func:`make_client_app`) is a ClientApp *mod*. It runs after the ``@app.train()`` function,
  reads the reply's ``ArrayRecord`` and ``MetricRecord``, signs them with the node's key
  (:func:`~pqc_fl.envelope.sign_update`) and adds a ``ConfigRecord`` ``"pqc"`` holding the
  canonical envelope and the signature. Weights travel unchanged in the ``ArrayRecord``.
* server: Flower has no server-side mods, so :class:`VerifyingFedAvg` overrides
  ``aggregate_train``. For every reply it rebuilds the signed update from exactly the records
  FedAvg would aggregate (arrays, ``num-examples`` and metrics), verifies it, and passes on only
  verified replies whose content it has *replaced* by the verified tensors and metrics, so nothing
  unverified (an extra record, a changed weight) can reach the average. Every rejection is recorded
  with its :class:`~pqc_fl.envelope.Reason` code.

Keys are provisioned out of band: ``qhybrid fl keys --out KEYDIR --clients N`` writes one 0600
key file per client (``client-<partition-id>.json``) and the server's ``registry.json``.

The same module serves both Flower engines:

* simulation: :func:`run_flower_simulation` (used by ``qhybrid fl run --set engine="flower"``);
* deployment: ``client_app`` / ``server_app`` below read their settings from ``context.run_config``
  (keys such as ``key-dir``, ``model``, ``rounds``, ``scheme``; see docs/pqc_fl.md for the
  SuperLink / SuperNode commands).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from pqc_fl.attacks import tamper
from pqc_fl.envelope import (
    Envelope,
    MalformedUpdateError,
    Reason,
    SignedUpdate,
    Verdict,
    _metrics_tuple,
    canonical_tensors,
    sign_update,
    verify_update,
)
from pqc_fl.keys import KeyRegistry, load_client_key
from pqc_fl.simulate import FLConfig, client_seed
from pqc_fl.task import build_model, digits, evaluate, load_state, local_train, partition
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_json

__all__ = [
    "VerifyingFedAvg",
    "client_app",
    "content_to_update",
    "make_client_app",
    "make_server_app",
    "run_flower_simulation",
    "server_app",
    "update_to_content",
]

logger = logging.getLogger(__name__)

PQC = "pqc"  # RecordDict key of the ConfigRecord with envelope and signature
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key
NODE = "node"  # ConfigRecord with the client id on unsigned replies (aggregation order only)


# ------------------------------------------------------------------------------------------------
# settings: FLConfig defaults, overridden by Flower's run config (deployment)
# ------------------------------------------------------------------------------------------------


def settings(context: Context, base: FLConfig, key_dir: str | None) -> tuple[FLConfig, Path]:
    """The run's FLConfig and key directory: ``base`` with ``context.run_config`` overrides.

    Run-config keys are the FLConfig field names with dashes (``num-clients``, ``local-steps``...)
    plus ``key-dir``.
    """
    rc: dict[str, Any] = dict(context.run_config)
    local = base.local
    for k in ("steps", "batch_size", "lr"):
        if (v := rc.pop(f"local-{k.replace('_', '-')}", None)) is not None:
            local = dataclasses.replace(local, **{k: v})
    changes: dict[str, Any] = {"local": local}
    for f in dataclasses.fields(FLConfig):
        if f.name != "local" and (v := rc.pop(f.name.replace("_", "-"), None)) is not None:
            changes[f.name] = v
    kd = rc.pop("key-dir", key_dir)
    if kd is None:
        raise QHybridError("no key directory: set run config 'key-dir' (see `qhybrid fl keys`)")
    return dataclasses.replace(base, **changes), Path(str(kd))


def _server_round(msg: Message) -> int:
    return int(cast(Any, msg.content.config_records["config"]["server-round"]))


def flower_run_id(context: Context) -> str:
    """The run id both sides sign and check: Flower's own run id."""
    return f"flwr-{context.run_id}"


# ------------------------------------------------------------------------------------------------
# records <-> signed updates
# ------------------------------------------------------------------------------------------------


def update_to_content(u: SignedUpdate, extra: Mapping[str, float] | None = None) -> RecordDict:
    """The reply content for a signed update: arrays, metrics (with num-examples) and "pqc"."""
    metrics: dict[str, Any] = {k: v for k, v in u.envelope.metrics}
    metrics[NUM_EXAMPLES] = u.envelope.num_examples
    pqc: dict[str, Any] = {"envelope": u.envelope.to_bytes(), "signature": u.signature}
    pqc.update({k: float(v) for k, v in (extra or {}).items()})
    return RecordDict(
        {
            "arrays": ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in u.tensors.items()}
            ),
            "metrics": MetricRecord(metrics),
            PQC: ConfigRecord(pqc),
        }
    )


def content_to_update(content: RecordDict) -> SignedUpdate:
    """Rebuild the signed update from what FedAvg would aggregate; raises MalformedUpdateError.

    The envelope's ``num_examples`` and ``metrics`` are taken from the ``MetricRecord`` (the values
    FedAvg weights by), not from the transmitted envelope, so a changed metric fails the signature.
    """
    if PQC not in content.config_records:
        raise _Unsigned()
    if set(content) != {"arrays", "metrics", PQC}:
        raise MalformedUpdateError(
            f"reply records {sorted(content)} != ['arrays', 'metrics', 'pqc']"
        )
    pqc = content.config_records[PQC]
    env_bytes, sig = pqc.get("envelope"), pqc.get("signature")
    if not isinstance(env_bytes, bytes) or not isinstance(sig, bytes):
        raise MalformedUpdateError("'pqc' record needs bytes 'envelope' and 'signature'")
    env = Envelope.from_bytes(env_bytes)
    mr = dict(content.metric_records["metrics"])
    n = mr.pop(NUM_EXAMPLES, None)
    if not isinstance(n, int) or isinstance(n, bool):
        raise MalformedUpdateError(f"'{NUM_EXAMPLES}' must be an int, got {n!r}")
    try:
        env = dataclasses.replace(env, num_examples=n, metrics=_metrics_tuple(mr))
        tensors = canonical_tensors(
            {k: a.numpy() for k, a in content.array_records["arrays"].items()}
        )
    except (QHybridError, TypeError, ValueError) as err:
        raise MalformedUpdateError(f"reply records do not form an update: {err}") from None
    return SignedUpdate(env, sig, tensors)


class _Unsigned(MalformedUpdateError):
    def __init__(self) -> None:
        super().__init__("reply carries no 'pqc' signature record")


# ------------------------------------------------------------------------------------------------
# client side
# ------------------------------------------------------------------------------------------------


def make_client_app(base: FLConfig | None = None, key_dir: str | None = None) -> ClientApp:
    """A ClientApp that trains on its digits partition and signs every training reply."""
    base = base or FLConfig()

    def signing_mod(msg: Message, context: Context, call_next: Any) -> Message:
        reply: Message = call_next(msg, context)
        if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        cfg, kd = settings(context, base, key_dir)
        if not cfg.sign:
            return reply
        pid = int(context.node_config["partition-id"])
        key = load_client_key(kd / f"client-{pid}.json")
        metrics: dict[str, Any] = dict(reply.content.metric_records["metrics"])
        n = int(metrics.pop(NUM_EXAMPLES))
        t0 = time.perf_counter()
        u = sign_update(
            {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()},
            scheme=key.scheme, secret_key=key.secret_key, key_id=key.key_id,
            client_id=key.client_id, run_id=flower_run_id(context),
            round=_server_round(msg),
            num_examples=n, metrics=metrics, mode=cfg.mode,
        )  # fmt: skip
        extra = {"digest_s": u.timings["digest"], "sign_s": u.timings["sign"],
                 "total_sign_s": time.perf_counter() - t0}  # fmt: skip
        return Message(update_to_content(u, extra), reply_to=msg)

    def attack_mod(msg: Message, context: Context, call_next: Any) -> Message:
        """Outermost mod: the configured attacker tampers with its reply after signing."""
        reply: Message = call_next(msg, context)
        cfg, _ = settings(context, base, key_dir)
        pid = int(context.node_config["partition-id"])
        if (
            cfg.attack == "none" or pid != cfg.attacker or reply.has_error()
            or msg.metadata.message_type != MessageType.TRAIN
        ):  # fmt: skip
            return reply
        u = content_to_update(reply.content)
        prev = None
        if "attacker-prev" in context.state.config_records:
            prev = SignedUpdate.from_bytes(context.state.config_records["attacker-prev"]["blob"])  # type: ignore[arg-type]
        context.state["attacker-prev"] = ConfigRecord({"blob": u.to_bytes()})
        bad = tamper(u, cfg.attack, previous=prev, victim="client-0")
        return Message(update_to_content(bad), reply_to=msg)

    app = ClientApp(mods=[attack_mod, signing_mod])

    @app.train()
    def train_fn(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)
        cfg, _ = settings(context, base, key_dir)
        pid = int(context.node_config["partition-id"])
        rnd = _server_round(msg)
        x_tr, y_tr, _, _ = digits(cfg.seed)
        idx = partition(
            y_tr, cfg.num_clients, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed
        )[pid]
        model = build_model(cfg.model, cfg.seed)
        load_state(model, {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()})
        state, n, metrics = local_train(
            model, x_tr[idx], y_tr[idx], cfg.local, seed=client_seed(cfg.seed, rnd, pid)
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in state.items()}),
                "metrics": MetricRecord({**metrics, NUM_EXAMPLES: n}),
                # the signing mod replaces the content; unsigned baselines use this to aggregate
                # in client order, as signed runs do, so both sum in the same float order
                NODE: ConfigRecord({"client-id": f"client-{pid}"}),
            }
        )
        return Message(content, reply_to=msg)

    return app


# ------------------------------------------------------------------------------------------------
# server side
# ------------------------------------------------------------------------------------------------


class VerifyingFedAvg(FedAvg):
    """FedAvg that aggregates only replies whose signed update verifies.

    Attributes:
        rejections: one dict per rejected reply: round, node, claimed client, reason code, detail.
        round_stats: per round: accepted, rejected, verify and hash seconds, client sign seconds.
    """

    def __init__(
        self,
        *,
        registry: KeyRegistry,
        run_id: str,
        allowed_schemes: set[str] | None = None,
        allowed_modes: set[str] | None = None,
        require_signatures: bool = True,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.require_signatures = require_signatures  # False: the unsigned FedAvg baseline
        self.registry = registry
        self.run_id = run_id
        self.allowed_schemes = allowed_schemes
        self.allowed_modes = allowed_modes
        self.rejections: list[dict[str, Any]] = []
        self.round_stats: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def verify_content(
        self, server_round: int, content: RecordDict
    ) -> tuple[Verdict, RecordDict | None]:
        """Verify one reply's content; on success also return the clean content to aggregate."""
        try:
            u = content_to_update(content)
        except _Unsigned as err:
            return Verdict(False, Reason.UNSIGNED, str(err)), None
        except MalformedUpdateError as err:
            return Verdict(False, Reason.MALFORMED, str(err)), None
        v = verify_update(
            u, registry=self.registry, run_id=self.run_id, round=server_round,
            allowed_schemes=self.allowed_schemes, allowed_modes=self.allowed_modes,
            seen_nonces=self._seen,
        )  # fmt: skip
        if not v.ok:
            return v, None
        clean = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.array(t)) for k, t in u.tensors.items()}),
                "metrics": MetricRecord(
                    {**dict(u.envelope.metrics), NUM_EXAMPLES: u.envelope.num_examples}
                ),
            }
        )
        return v, clean

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: list[tuple[str, Message]] = []
        stats: dict[str, Any] = {"round": server_round, "accepted": 0, "rejected": 0, "verify_s": 0.0,
                 "hash_s": 0.0, "client_sign_s": [], "client_digest_s": []}  # fmt: skip
        for msg in replies:
            if msg.has_error():
                kept.append(("", msg))  # FedAvg logs and skips errors itself
                continue
            if not self.require_signatures:  # baseline: aggregate as plain FedAvg
                node = msg.content.config_records.get(NODE)
                who = str(node["client-id"]) if node else str(msg.metadata.src_node_id)
                msg.content = RecordDict(
                    {"arrays": msg.content["arrays"], "metrics": msg.content["metrics"]}
                )
                stats["accepted"] += 1
                kept.append((who, msg))
                continue
            t0 = time.perf_counter()
            v, clean = self.verify_content(server_round, msg.content)
            stats["verify_s"] += v.verify_seconds
            stats["hash_s"] += v.hash_seconds
            if clean is None:
                stats["rejected"] += 1
                self.rejections.append(
                    {"round": server_round, "node": msg.metadata.src_node_id,
                     "client": v.client_id, "reason": str(v.reason), "detail": v.detail}
                )  # fmt: skip
                logger.warning(
                    "round %d: rejected reply from node %d (client %s): %s %s",
                    server_round, msg.metadata.src_node_id, v.client_id, v.reason, v.detail,
                )  # fmt: skip
                continue
            pqc = msg.content.config_records[PQC]
            stats["client_sign_s"].append(float(cast(Any, pqc.get("sign_s", 0.0))))
            stats["client_digest_s"].append(float(cast(Any, pqc.get("digest_s", 0.0))))
            stats["accepted"] += 1
            logger.debug("round %d: verified %s in %.2f ms", server_round, v.client_id,
                         1e3 * (time.perf_counter() - t0))  # fmt: skip
            msg.content = clean
            kept.append((str(v.client_id), msg))
        self.round_stats.append(stats)
        kept.sort(key=lambda cm: cm[0])  # aggregate in client order: deterministic sums
        return super().aggregate_train(server_round, [m for _, m in kept])


def make_server_app(
    base: FLConfig | None = None, key_dir: str | None = None, out: str | None = None
) -> ServerApp:
    """A ServerApp running :class:`VerifyingFedAvg` with central evaluation on the digits test set."""
    base = base or FLConfig()
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, kd = settings(context, base, key_dir)
        out_path = context.run_config.get("out", out)
        registry = KeyRegistry.load(kd / "registry.json")
        _, _, x_te, y_te = digits(cfg.seed)
        model = build_model(cfg.model, cfg.seed)
        n = cfg.num_clients
        strategy = VerifyingFedAvg(
            registry=registry, run_id=flower_run_id(context), allowed_schemes={cfg.scheme},
            require_signatures=cfg.sign,
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n,
        )  # fmt: skip

        def central_eval(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            load_state(model, {k: a.numpy() for k, a in arrays.items()})
            return MetricRecord(cast(Any, evaluate(model, x_te, y_te)))

        initial = ArrayRecord({k: Array(v.detach().numpy()) for k, v in model.state_dict().items()})
        result = strategy.start(
            grid=grid, initial_arrays=initial, num_rounds=cfg.rounds, evaluate_fn=central_eval
        )
        rounds = []
        for st in strategy.round_stats:
            ev: Any = result.evaluate_metrics_serverapp.get(st["round"], {})
            rounds.append({**st, **{k: float(v) for k, v in ev.items()}})
        summary = {
            "engine": "flower", "run_id": strategy.run_id, "config": dataclasses.asdict(cfg),
            "rounds": rounds, "rejections": strategy.rejections,
            "final_state": {k: a.numpy().tolist() for k, a in result.arrays.items()}
            if cfg.model == "mlp" else None,
        }  # fmt: skip
        if out_path:
            atomic_write_json(Path(str(out_path)), summary)

    return app


# deployment entry points (pyproject: [tool.flwr.app.components]); settings come from run_config
client_app = make_client_app()
server_app = make_server_app()


def run_flower_simulation(
    config: FLConfig, key_dir: str | Path, out: str | Path, *, num_cpus: int = 2
) -> dict[str, Any]:
    """Run ``config`` on Flower's simulation engine (Ray) and return the server's summary."""
    import json
    import os

    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silence a Ray FutureWarning

    run_simulation(
        server_app=make_server_app(config, str(key_dir), str(out)),
        client_app=make_client_app(config, str(key_dir)),
        num_supernodes=config.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": num_cpus, "logging_level": "ERROR", "log_to_driver": False},
        },
    )
    path = Path(out)
    if not path.exists():
        raise QHybridError(
            f"the Flower simulation ended without writing {path}; rerun with -v for Flower's log"
        )
    return dict(json.loads(path.read_text()))
