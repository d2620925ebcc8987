"""Verification around any Flower strategy, and the strategies the experiments use.

:class:`VerifyingStrategy` wraps a Flower ``Strategy`` (FedAvg, FedMedian, Krum / MultiKrum,
FedTrimmedAvg, Bulyan, ...; Flower's DP wrappers expect a reply from every sampled node, so with
rejected replies they skip the round). Flower has no server-side mods, so the wrapper
implements the Strategy interface by delegation and filters the replies of ``aggregate_train``:
each reply is rebuilt into the signed update from exactly the records the inner strategy would
aggregate (arrays, ``num-examples`` and metrics), a whole round is verified by a
:class:`~pqc_fl.server.RoundVerifier` (signature, schema, caps, one update per client, node
binding, quorum), and only verified replies, their content *replaced* by the verified tensors and
metrics, reach the inner strategy, in client order. Signing only proves who sent an update; the
robust inner strategies (Yin et al., arXiv 1803.01498; Blanchard et al., arXiv 1703.02757;
El Mhamdi et al., arXiv 1802.07927) bound what a validly signed but malicious update can do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from pqc_fl.config import STRATEGIES
from pqc_fl.envelope import Envelope, MalformedUpdateError, canonical_tensors, metrics_tuple
from pqc_fl.policy import MAX_RECORDS
from pqc_fl.server import RoundVerifier
from pqc_fl.verify import Reason, Verdict
from pqc_fl.wire import SignedUpdate
from qhybrid.errors import QHybridError

__all__ = [
    "STRATEGIES",
    "VerifyingStrategy",
    "content_to_update",
    "make_strategy",
    "update_to_content",
]

logger = logging.getLogger(__name__)

PQC = "pqc"  # RecordDict key of the ConfigRecord with envelope and signature
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key
NODE = "node"  # ConfigRecord with the client id on unsigned replies (aggregation order only)


def make_strategy(
    name: str, num_clients: int, *, num_malicious: int = 0, beta: float = 0.2
) -> Strategy:
    """A Flower strategy that trains all ``num_clients`` every round, without client evaluation.

    ``num_malicious`` is the Byzantine count Krum / MultiKrum / Bulyan assume; ``beta`` the
    fraction FedTrimmedAvg cuts at each end.
    """
    common: dict[str, Any] = dict(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=num_clients,
        min_available_nodes=num_clients,
    )
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=beta, **common)
    if name == "krum":
        return Krum(num_malicious_nodes=num_malicious, **common)
    if name == "multikrum":  # average the n - f best-scored updates (Blanchard et al., Sec. 5)
        return MultiKrum(
            num_malicious_nodes=num_malicious,
            num_nodes_to_select=num_clients - num_malicious,
            **common,
        )
    if name == "bulyan":
        return Bulyan(num_malicious_nodes=num_malicious, **common)
    raise QHybridError(f"strategy={name!r} is not one of {STRATEGIES}")


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


def content_to_update(content: RecordDict, *, max_records: int = MAX_RECORDS) -> SignedUpdate:
    """Rebuild the signed update from what FedAvg would aggregate; raises MalformedUpdateError.

    The envelope's ``num_examples`` and ``metrics`` are taken from the ``MetricRecord`` (the values
    FedAvg weights by), not from the transmitted envelope, so a changed metric fails the signature.
    More than ``max_records`` arrays are refused before any is converted.
    """
    if PQC not in content.config_records:
        raise _Unsigned()
    if (
        set(content) != {"arrays", "metrics", PQC}
        or "arrays" not in content.array_records
        or "metrics" not in content.metric_records
    ):
        raise MalformedUpdateError(
            f"reply records {sorted(content)} are not ArrayRecord 'arrays', MetricRecord "
            "'metrics' and ConfigRecord 'pqc'"
        )
    if len(content.array_records["arrays"]) > max_records:
        raise MalformedUpdateError(
            f"{len(content.array_records['arrays'])} arrays exceed the cap of {max_records}"
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
        env = dataclasses.replace(env, num_examples=n, metrics=metrics_tuple(mr))
        tensors = canonical_tensors(
            {k: a.numpy() for k, a in content.array_records["arrays"].items()}
        )
    except (QHybridError, TypeError, ValueError) as err:
        raise MalformedUpdateError(f"reply records do not form an update: {err}") from None
    return SignedUpdate(env, sig, tensors)


class _Unsigned(MalformedUpdateError):
    def __init__(self) -> None:
        super().__init__("reply carries no 'pqc' signature record")


def clean_content(u: SignedUpdate) -> RecordDict:
    """Only what was verified: the tensors and the signed metrics with num-examples."""
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.array(t)) for k, t in u.tensors.items()}),
            "metrics": MetricRecord(
                {**dict(u.envelope.metrics), NUM_EXAMPLES: u.envelope.num_examples}
            ),
        }
    )


class VerifyingStrategy(Strategy):
    """Any Flower strategy, aggregating only replies whose signed update passes the verifier.

    Args:
        inner: the strategy that samples clients and aggregates (FedAvg, FedMedian, Krum...).
        verifier: registry, run id, schema, policy, replay guard and quorum of the run.
        require_signatures: False gives the unsigned baseline (replies pass unchanged).
    """

    def __init__(
        self, inner: Strategy, verifier: RoundVerifier, *, require_signatures: bool = True
    ) -> None:
        self.inner = inner
        self.verifier = verifier
        self.require_signatures = require_signatures
        self.client_sign_s: list[list[float]] = []

    @property
    def rejections(self) -> list[dict[str, Any]]:
        """Every rejected reply so far (round, node, client, reason, detail)."""
        return self.verifier.rejections

    @property
    def round_stats(self) -> list[dict[str, Any]]:
        """Per round: replies, accepted, rejected, quorum and timings."""
        return self.verifier.round_stats

    def summary(self) -> None:
        """Log the wrapper and the inner strategy's own summary."""
        logger.info("VerifyingStrategy around %s", type(self.inner).__name__)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's training instructions, unchanged."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's evaluation instructions, unchanged."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The inner strategy's evaluation aggregate (metrics only, nothing to verify)."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Verify the round's replies and let the inner strategy aggregate only the verified ones,
        their content replaced by the verified tensors and metrics (module docstring)."""
        replies = list(replies)
        errors = [m for m in replies if m.has_error()]  # the inner strategy logs and skips them
        good = [m for m in replies if not m.has_error()]
        if not self.require_signatures:
            self.verifier.round_stats.append(
                {"round": server_round, "replies": len(good), "accepted": len(good), "rejected": 0}
            )
            return self.inner.aggregate_train(server_round, errors + _unsigned_in_order(good))
        items: list[tuple[str | None, SignedUpdate | bytes]] = []
        early: dict[int, Verdict] = {}
        for i, msg in enumerate(good):
            try:
                u = content_to_update(msg.content, max_records=self.verifier.policy.max_records)
                items.append((str(msg.metadata.src_node_id), u))
            except _Unsigned as err:
                early[i] = Verdict(False, Reason.UNSIGNED, str(err))
                items.append((str(msg.metadata.src_node_id), b""))
            except MalformedUpdateError as err:
                early[i] = Verdict(False, Reason.MALFORMED, str(err))
                items.append((str(msg.metadata.src_node_id), b""))
        verdicts, met = self.verifier.verify_round(server_round, items, early=early)
        verified = [
            (m, v.update) for m, v in zip(good, verdicts, strict=True) if v.update is not None
        ]  # the accepted replies (a Verdict carries its update only when ok)
        self.client_sign_s.append([_sign_seconds(m) for m, _ in verified])
        if not met:
            return None, None
        kept = sorted(verified, key=lambda t: t[1].envelope.client_id)
        for m, u in kept:
            m.content = clean_content(u)
        return self.inner.aggregate_train(server_round, errors + [m for m, _ in kept])


def _sign_seconds(reply: Message) -> float:
    """The client's signing time reported in the reply's "pqc" record (0 when absent)."""
    value = reply.content.config_records[PQC].get("sign_s", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _unsigned_in_order(replies: list[Message]) -> list[Message]:
    """The unsigned baseline: arrays and metrics only, in client order (same float sums)."""

    def who(m: Message) -> str:
        node = m.content.config_records.get(NODE)
        return str(node["client-id"]) if node else str(m.metadata.src_node_id)

    out = sorted(replies, key=who)
    for m in out:
        m.content = RecordDict({"arrays": m.content["arrays"], "metrics": m.content["metrics"]})
    return out


@contextlib.contextmanager
def quiet_flwr() -> Iterator[None]:
    """Silence Flower's per-call INFO/WARNING lines while the in-process engine drives a strategy
    directly (there is no Flower run to report on); errors still show."""
    log = logging.getLogger("flwr")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def aggregate_updates(
    strategy: Strategy, server_round: int, updates: list[tuple[str, dict[str, np.ndarray], int]]
) -> ArrayRecord | None:
    """``strategy.aggregate_train`` on verified ``(client id, tensors, num_examples)`` outside a
    Flower run (the in-process engine), in client order as :class:`VerifyingStrategy` does."""
    from flwr.app import MessageType, Metadata

    replies = []
    for node, (_, tensors, n) in enumerate(sorted(updates, key=lambda u: u[0]), start=1):
        meta = Metadata(0, "", node, 0, "", str(server_round), 0.0, 3600.0, MessageType.TRAIN)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.asarray(t)) for k, t in tensors.items()}),
                "metrics": MetricRecord({NUM_EXAMPLES: n}),
            }
        )
        # a reply as the SuperLink delivers it (metadata= is Flower's internal constructor path)
        replies.append(Message(content=content, metadata=meta))  # type: ignore[call-overload]
    with quiet_flwr():
        arrays, _ = strategy.aggregate_train(server_round, replies)
    return arrays
