"""The Flower app: a ClientApp whose mod signs every training reply, and a verifying ServerApp.

Hook points (Flower 1.41 Message API):

* client: ``signing_mod`` (built by :func:`make_client_app`) is a ClientApp *mod*. It runs after
  the ``@app.train()`` function, reads the reply's ``ArrayRecord`` and ``MetricRecord``, signs them
  with the node's key (:func:`~pqc_fl.envelope.sign_update`, binding the update to this node's
  Flower node id) and adds a ``ConfigRecord`` ``"pqc"`` holding the canonical envelope and the
  signature. Weights travel unchanged in the ``ArrayRecord``.
* server: :class:`~pqc_fl.strategy.VerifyingStrategy` wraps the configured Flower strategy
  (``FLConfig.strategy``: FedAvg, FedMedian, Krum...) and passes on only verified replies.

Keys are provisioned out of band: ``qhybrid fl keys --dir KEYDIR --clients N --max-examples M``
writes one 0600 key file per client (``client-<partition-id>.json``), the server's own key
``server.json`` and the ``registry.json`` it signs.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

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

from pqc_fl.attacks import byzantine_state, tamper
from pqc_fl.keys import load_client_key, load_server_registry
from pqc_fl.policy import ServerPolicy, schema_of
from pqc_fl.server import RoundVerifier
from pqc_fl.sign import sign_update
from pqc_fl.simulate import FLConfig, client_seed
from pqc_fl.strategy import (
    NODE,
    NUM_EXAMPLES,
    VerifyingStrategy,
    content_to_update,
    make_strategy,
    update_to_content,
)
from pqc_fl.task import build_model, digits, evaluate, load_state, local_train, partition
from pqc_fl.wire import SignedUpdate
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_json

__all__ = [
    "client_app",
    "flower_project_file",
    "make_client_app",
    "make_server_app",
    "run_flower_simulation",
    "server_app",
]

logger = logging.getLogger(__name__)


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
# client side
# ------------------------------------------------------------------------------------------------


def make_client_app(base: FLConfig | None = None, key_dir: str | None = None) -> ClientApp:
    """A ClientApp that trains on its digits partition and signs every training reply."""
    base = base or FLConfig()
    app = ClientApp(mods=[_attack_mod(base, key_dir), _signing_mod(base, key_dir)])
    app.train()(_train_function(base, key_dir))
    return app


Mod = Callable[[Message, Context, Any], Message]


def _signing_mod(base: FLConfig, key_dir: str | None) -> Mod:
    """The mod that signs the training reply's arrays and metrics with the node's key."""

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
            scheme=key.scheme,
            secret_key=key.secret_key,
            key_id=key.key_id,
            client_id=key.client_id,
            run_id=flower_run_id(context),
            round=_server_round(msg),
            num_examples=n,
            metrics=metrics,
            mode=cfg.mode,
            node=str(context.node_id),
            hash=cfg.hash,
        )
        extra = {
            "digest_s": u.timings["digest"],
            "sign_s": u.timings["sign"],
            "total_sign_s": time.perf_counter() - t0,
        }
        return Message(update_to_content(u, extra), reply_to=msg)

    return signing_mod


def _attack_mod(base: FLConfig, key_dir: str | None) -> Mod:
    """Outermost mod: the configured attacker tampers with its reply after signing."""

    def attack_mod(msg: Message, context: Context, call_next: Any) -> Message:
        reply: Message = call_next(msg, context)
        cfg, _ = settings(context, base, key_dir)
        pid = int(context.node_config["partition-id"])
        if (
            cfg.attack == "none"
            or pid != cfg.attacker
            or reply.has_error()
            or msg.metadata.message_type != MessageType.TRAIN
        ):
            return reply
        u = content_to_update(reply.content)
        prev = None
        if "attacker-prev" in context.state.config_records:
            blob = context.state.config_records["attacker-prev"]["blob"]
            prev = SignedUpdate.from_bytes(blob) if isinstance(blob, bytes) else None
        context.state["attacker-prev"] = ConfigRecord({"blob": u.to_bytes()})
        bad = tamper(u, cfg.attack, previous=prev, victim="client-0")
        return Message(update_to_content(bad), reply_to=msg)

    return attack_mod


def _train_function(base: FLConfig, key_dir: str | None) -> Callable[[Message, Context], Message]:
    """The ``@app.train()`` function: local training on the node's partition."""

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
        global_ = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
        load_state(model, global_)
        # a Byzantine node (the last num_byzantine partitions) signs malicious content validly
        kind = cfg.byzantine if pid >= cfg.num_clients - cfg.num_byzantine else "none"
        y = 9 - y_tr[idx] if kind == "label_flip" else y_tr[idx]
        state, n, metrics = local_train(
            model, x_tr[idx], y, cfg.local, seed=client_seed(cfg.seed, rnd, pid)
        )
        state = byzantine_state(kind, state, global_)
        n = 2**53 if kind == "inflate_examples" else n
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

    return train_fn


# ------------------------------------------------------------------------------------------------
# server side
# ------------------------------------------------------------------------------------------------


def make_server_app(
    base: FLConfig | None = None, key_dir: str | None = None, out: str | None = None
) -> ServerApp:
    """A ServerApp running :class:`~pqc_fl.strategy.VerifyingStrategy` around ``cfg.strategy``,
    with central evaluation on the digits test set."""
    base = base or FLConfig()
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, kd = settings(context, base, key_dir)
        out_path = context.run_config.get("out", out)
        registry = load_server_registry(kd)  # verified with the server's own key
        _, _, x_te, y_te = digits(cfg.seed)
        model = build_model(cfg.model, cfg.seed)
        verifier = RoundVerifier(
            registry,
            flower_run_id(context),
            schema_of(model.state_dict()),
            ServerPolicy.only(cfg.scheme),
            min_accepted=float(cfg.min_accepted),
        )
        inner = make_strategy(cfg.strategy, cfg.num_clients, num_malicious=cfg.num_byzantine)
        strategy = VerifyingStrategy(inner, verifier, require_signatures=cfg.sign)

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
            "engine": "flower",
            "run_id": verifier.run_id,
            "config": dataclasses.asdict(cfg),
            "rounds": rounds,
            "rejections": strategy.rejections,
            "final_state": {k: a.numpy().tolist() for k, a in result.arrays.items()}
            if cfg.model == "mlp"
            else None,
        }
        if out_path:
            atomic_write_json(Path(str(out_path)), summary)

    return app


# deployment entry points (pyproject: [tool.flwr.app.components]); settings come from run_config
client_app = make_client_app()
server_app = make_server_app()


def flower_project_file() -> Path:
    """The Flower project file (``pyproject.toml``) of the deployment app, shipped inside the
    package: copy it into an empty folder as ``pyproject.toml`` and ``flwr run`` that folder."""
    return Path(__file__).with_name("flower_pyproject.toml")


def run_flower_simulation(
    config: FLConfig, key_dir: str | Path, out: str | Path, *, num_cpus: int = 2
) -> dict[str, Any]:
    """Run ``config`` on Flower's simulation engine (Ray) and return the server's summary."""
    import json
    import os

    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silence a Ray FutureWarning
    if not logging.getLogger(__name__).isEnabledFor(logging.INFO):  # Flower's banner only with -v
        flwr_log = logging.getLogger("flwr")
        flwr_log.setLevel(logging.WARNING)
        flwr_log.propagate = False  # its own handler prints it; not twice

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
