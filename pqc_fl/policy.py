"""The server's verification policy: what a validly signed update may still not do.

A valid signature proves *who* sent an update, not that the sender is honest. The policy bounds
what a holder of a valid, registered key can do to the global model (the insider threat of
Byzantine federated learning, Blanchard et al., arXiv 1703.02757):

* :class:`ServerPolicy`: which schemes and signing modes are acceptable (post-quantum only unless
  the operator lists a classical scheme), the caps on record count and update size that are
  checked before any tensor record is parsed, and the largest absolute weight value;
* :func:`schema_of`: the global model's schema ``name -> (dtype, shape)``; an update must match it
  exactly (no extra, missing, reshaped or re-typed tensors);
* :class:`ReplayGuard`: the server's memory across the run: accepted nonces, at most one update
  per ``(run, round, client)``, and the binding of a client id to the transport node (the Flower
  node id) that first delivered one of its accepted updates.

Every refusal is a :class:`~pqc_fl.envelope.Reason` code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pqc_fl.envelope import canonical_tensors
from pqc_fl.schemes import POST_QUANTUM_SCHEMES, SCHEME_NAMES, canonical_name
from qhybrid.errors import QHybridError

__all__ = ["MAX_RECORDS", "ReplayGuard", "Schema", "ServerPolicy", "schema_of"]

MAX_RECORDS = 4096  # tensor records in one update unless the policy says otherwise
Schema = Mapping[str, tuple[str, tuple[int, ...]]]  # name -> (numpy dtype string, shape)


@dataclass(frozen=True)
class ServerPolicy:
    """What the server accepts besides a valid signature.

    Attributes:
        allowed_schemes: scheme names accepted; by default every post-quantum scheme and no
            classical one (a registered Ed25519 key is refused with ``scheme_not_allowed``).
        allowed_modes: signing modes accepted (``digest``, ``full``, ``mu``).
        allowed_hashes: digest hashes accepted (``sha256``, ``blake3``; both 256-bit).
        max_records: tensor records per update (read from the 4-byte count before any record).
        max_update_bytes: bytes of the tensor stream (checked before the signature).
        max_abs: largest accepted ``|value|`` of a floating-point weight; ``None`` = only finiteness.
            A finite 3e38 still overflows the weighted sum to ``inf``.
    """

    allowed_schemes: frozenset[str] = POST_QUANTUM_SCHEMES
    allowed_modes: frozenset[str] = frozenset({"digest", "full", "mu"})
    allowed_hashes: frozenset[str] = frozenset({"sha256", "blake3"})
    max_records: int = MAX_RECORDS
    max_update_bytes: int = 1 << 31
    max_abs: float | None = 1e6

    def __post_init__(self) -> None:
        if isinstance(self.allowed_schemes, str) or not self.allowed_schemes:
            raise QHybridError(
                f"allowed_schemes={self.allowed_schemes!r} must be a non-empty set of names from "
                f"{sorted(SCHEME_NAMES)}"
            )
        names = frozenset(canonical_name(n) for n in self.allowed_schemes)  # SchemeError if unknown
        object.__setattr__(self, "allowed_schemes", names)
        object.__setattr__(self, "allowed_modes", frozenset(self.allowed_modes))
        object.__setattr__(self, "allowed_hashes", frozenset(self.allowed_hashes))
        if not self.allowed_hashes or not self.allowed_hashes <= {"sha256", "blake3"}:
            raise QHybridError(
                f"allowed_hashes {sorted(self.allowed_hashes)} must be a non-empty "
                "subset of sha256/blake3"
            )
        if not set(self.allowed_modes) <= {"digest", "full", "mu"} or not self.allowed_modes:
            raise QHybridError(
                f"allowed_modes {sorted(self.allowed_modes)} must be non-empty "
                "and within digest/full/mu"
            )
        if self.max_records < 1 or self.max_update_bytes < 1:
            raise QHybridError("max_records and max_update_bytes must be >= 1")
        if self.max_abs is not None and not self.max_abs > 0:
            raise QHybridError(f"max_abs={self.max_abs} must be > 0 (or None)")

    @classmethod
    def only(cls, *schemes: str, **kw: Any) -> ServerPolicy:
        """A policy accepting exactly ``schemes`` (canonical names such as ``ml-dsa-44``)."""
        return cls(allowed_schemes=frozenset(schemes), **kw)


def schema_of(state: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name -> (little-endian numpy dtype string, shape)`` of a state dict (torch or numpy)."""
    return {k: (a.dtype.str, tuple(a.shape)) for k, a in canonical_tensors(state).items()}


def schema_difference(expected: Schema, got: Mapping[str, np.ndarray]) -> str:
    """'' if ``got`` has exactly the expected names, dtypes and shapes, else what differs."""
    extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
    if extra or missing:
        return f"extra tensors {extra[:5]}, missing {missing[:5]}"
    for k, (dt, shape) in expected.items():
        a = got[k]
        if a.dtype.str != dt or tuple(a.shape) != tuple(shape):
            return (
                f"tensor {k!r} is {a.dtype.str}{tuple(a.shape)}, the model has {dt}{tuple(shape)}"
            )
    return ""


def value_problem(tensors: Iterable[tuple[str, np.ndarray]], max_abs: float | None) -> str | None:
    """None if every float is finite (and within ``max_abs``); "non_finite" or "out_of_range"."""
    worst = 0.0
    for _, a in tensors:
        if a.dtype.kind != "f" or a.size == 0:
            continue
        lo, hi = float(a.min()), float(a.max())  # NaN propagates; no temporary array
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return "non_finite"
        worst = max(worst, -lo, hi)
    if max_abs is not None and worst > max_abs:
        return "out_of_range"
    return None


@dataclass
class ReplayGuard:
    """The server's memory of accepted updates, for one server process (all runs it serves).

    ``check`` is read-only; ``admit`` records an accepted update. A caller that verifies a whole
    round first and resolves conflicts (two nodes claiming one client) commits only afterwards.
    """

    nonces: set[tuple[str, str]] = field(default_factory=set)  # (run, nonce)
    submitted: set[tuple[str, int, str]] = field(default_factory=set)  # (run, round, client)
    client_node: dict[tuple[str, str], str] = field(default_factory=dict)  # (run, client) -> node
    node_client: dict[tuple[str, str], str] = field(default_factory=dict)  # (run, node) -> client

    def check(self, run: str, round: int, client: str, nonce: str, node: str | None) -> str:
        """The reason code an update would get: ok, replay, duplicate_submission, node_mismatch."""
        if (run, nonce) in self.nonces:
            return "replay"
        if node is not None:
            bound = self.client_node.get((run, client))
            if bound is not None and bound != node:
                return "node_mismatch"
            speaks_for = self.node_client.get((run, node))
            if speaks_for is not None and speaks_for != client:
                return "node_mismatch"
        if (run, round, client) in self.submitted:
            return "duplicate_submission"
        return "ok"

    def admit(self, run: str, round: int, client: str, nonce: str, node: str | None) -> None:
        self.nonces.add((run, nonce))
        self.submitted.add((run, round, client))
        if node is not None:
            self.client_node.setdefault((run, client), node)
            self.node_client.setdefault((run, node), client)
