"""Server-side verification of a whole round, shared by the Flower strategy wrapper and the
in-process engine.

:class:`RoundVerifier` verifies every update of a round (:func:`~pqc_fl.envelope.verify_update`)
without committing, then resolves what only a whole round shows: two replies claiming one client
(both rejected as ``duplicate_submission`` unless the client is already bound to one of the
sending nodes, whose reply is kept), or one node speaking for two clients (both
``node_mismatch``). Only then are the accepted updates recorded in the :class:`ReplayGuard`, and
the round is checked against the quorum: fewer accepted updates than ``min_accepted`` is logged
as an error, marked in ``round_stats`` (and the report), and optionally aborts the run.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pqc_fl.keys import KeyRegistry
from pqc_fl.policy import ReplayGuard, Schema, ServerPolicy
from pqc_fl.verify import DEFAULT_POLICY, Reason, Verdict, verify_update
from pqc_fl.wire import SignedUpdate
from qhybrid.errors import QHybridError

__all__ = ["QuorumError", "RoundVerifier"]

logger = logging.getLogger(__name__)


class QuorumError(QHybridError):
    """Too few updates of a round were accepted, and the verifier was told to abort."""


@dataclass
class RoundVerifier:
    """Verify rounds of updates for one run.

    Attributes:
        registry, run_id, schema, policy: as in :func:`~pqc_fl.envelope.verify_update`.
        min_accepted: quorum; an int is a count, a float in (0, 1] a fraction of the replies.
        abort_below_quorum: raise :class:`QuorumError` instead of skipping the round's update.
        rejections: one dict per rejected update (round, node, client, reason, detail).
        round_stats: per round: replies, accepted, rejected, quorum, quorum_met, seconds.
    """

    registry: KeyRegistry
    run_id: str
    schema: Schema | None
    policy: ServerPolicy = DEFAULT_POLICY
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    min_accepted: int | float = 0.5
    abort_below_quorum: bool = False
    rejections: list[dict[str, Any]] = field(default_factory=list)
    round_stats: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        m = self.min_accepted
        if isinstance(m, bool) or not (
            (isinstance(m, int) and m >= 0) or (isinstance(m, float) and 0.0 < m <= 1.0)
        ):
            raise QHybridError(
                f"min_accepted={m!r} must be an int >= 0 (a count) or a float in (0, 1] "
                "(a fraction of the replies)"
            )

    def quorum(self, replies: int) -> int:
        """Accepted updates a round of ``replies`` replies needs (``min_accepted``)."""
        m = self.min_accepted
        return m if isinstance(m, int) else math.ceil(m * replies)

    def verify_round(
        self,
        round: int,
        items: list[tuple[str | None, SignedUpdate | bytes]],
        *,
        early: Mapping[int, Verdict] | None = None,
    ) -> tuple[list[Verdict], bool]:
        """Verify ``(node, update)`` pairs of one round; returns the verdicts and quorum_met.

        ``early`` holds verdicts already reached for some items (e.g. unsigned Flower replies).
        """
        early = early or {}
        verdicts = [
            early[i]
            if i in early
            else verify_update(
                u,
                registry=self.registry,
                run_id=self.run_id,
                round=round,
                guard=self.guard,
                schema=self.schema,
                policy=self.policy,
                node=node,
                commit=False,
            )
            for i, (node, u) in enumerate(items)
        ]
        verdicts = self._resolve(verdicts, [node for node, _ in items])
        for (node, _), v in zip(items, verdicts, strict=True):
            if v.ok:
                self.guard.admit(self.run_id, round, str(v.client_id), str(v.nonce), node)
            else:
                self.rejections.append(
                    {
                        "round": round,
                        "node": node,
                        "client": v.client_id,
                        "reason": str(v.reason),
                        "detail": v.detail,
                    }
                )
                logger.warning(
                    "round %d: rejected update from node %s (client %s): %s %s",
                    round,
                    node,
                    v.client_id,
                    v.reason,
                    v.detail,
                )
        accepted = sum(v.ok for v in verdicts)
        need = self.quorum(len(items))
        met = accepted >= need and accepted > 0
        self.round_stats.append(
            {
                "round": round,
                "replies": len(items),
                "accepted": accepted,
                "rejected": len(items) - accepted,
                "quorum": need,
                "quorum_met": met,
                "verify_s": sum(v.verify_seconds for v in verdicts),
                "hash_s": sum(v.hash_seconds for v in verdicts),
            }
        )
        if not met:
            msg = (
                f"round {round}: only {accepted} of {len(items)} updates accepted, below the "
                f"quorum of {need}; the global model is not updated this round"
            )
            logger.error(msg)
            if self.abort_below_quorum:
                raise QuorumError(msg + " (abort_below_quorum=True)")
        return verdicts, met

    @staticmethod
    def _resolve(verdicts: list[Verdict], nodes: list[str | None]) -> list[Verdict]:
        """Reject every update of a client claimed twice, and of a node speaking for two clients."""
        ok = [(v, n) for v, n in zip(verdicts, nodes, strict=True) if v.ok]
        per_client = Counter(v.client_id for v, _ in ok)
        per_node = {n: {v.client_id for v, m in ok if m == n} for _, n in ok if n is not None}
        out = []
        for v, n in zip(verdicts, nodes, strict=True):
            if v.ok and per_client[v.client_id] > 1:
                v = replace(
                    v,
                    ok=False,
                    reason=Reason.DUPLICATE_SUBMISSION,
                    update=None,
                    detail=f"{per_client[v.client_id]} updates of one client this round",
                )
            elif v.ok and n is not None and len(per_node[n]) > 1:
                v = replace(
                    v,
                    ok=False,
                    reason=Reason.NODE_MISMATCH,
                    update=None,
                    detail=f"node {n} sent updates of clients {sorted(map(str, per_node[n]))}",
                )
            out.append(v)
        return out
