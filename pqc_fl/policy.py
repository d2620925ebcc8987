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
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Gt

from pqc_fl.envelope import HASHES, MODES, canonical_tensors
from pqc_fl.schemes import POST_QUANTUM_SCHEMES, SCHEME_NAMES, canonical_name
from qhybrid.config import check_fields
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
        max_abs_metric: largest accepted ``|value|`` of a signed metric (``train_loss``...);
            ``None`` = only finiteness.
    """

    allowed_schemes: frozenset[str] = POST_QUANTUM_SCHEMES
    allowed_modes: frozenset[str] = frozenset(MODES)
    allowed_hashes: frozenset[str] = frozenset(HASHES)
    max_records: Annotated[int, Ge(1)] = MAX_RECORDS
    max_update_bytes: Annotated[int, Ge(1)] = 1 << 31
    max_abs: Annotated[float, Gt(0)] | None = 1e6
    max_abs_metric: Annotated[float, Gt(0)] | None = 1e6

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        for name, allowed in (
            ("allowed_schemes", SCHEME_NAMES),
            ("allowed_modes", MODES),
            ("allowed_hashes", HASHES),
        ):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Iterable) or not value:
                raise QHybridError(
                    f"{name}={value!r} must be a non-empty set of names from {sorted(allowed)}"
                )
            names = frozenset(value)
            if name == "allowed_schemes":  # SchemeError for an unknown name
                names = frozenset(canonical_name(n) for n in names)
            elif not names <= set(allowed):
                raise QHybridError(f"{name} {sorted(names)} must be a subset of {sorted(allowed)}")
            object.__setattr__(self, name, names)

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
        """Record an accepted update: its nonce, its (run, round, client) slot and, when the
        transport named the sender, the client-node binding (first use binds)."""
        self.nonces.add((run, nonce))
        self.submitted.add((run, round, client))
        if node is not None:
            self.client_node.setdefault((run, client), node)
            self.node_client.setdefault((run, node), client)
