"""Verifying a signed update on the server, cheapest check first, with a stable reason code.

:func:`verify_update` never raises on attacker-controlled input: it returns a :class:`Verdict` whose
``reason`` is a :class:`Reason`. Nothing past the header is parsed before the signature verifies.
:class:`~pqc_fl.server.RoundVerifier` runs it over a whole round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pqc_fl.envelope import (
    CONTEXT,
    ENVELOPE_VERSION,
    HASHES,
    MODES,
    Envelope,
    MalformedUpdateError,
    state_hasher,
    tensor_stream,
)
from pqc_fl.keys import KeyRecord, KeyRegistry
from pqc_fl.policy import ReplayGuard, Schema, ServerPolicy, schema_difference, value_problem
from pqc_fl.schemes import SignatureScheme, get_scheme
from pqc_fl.wire import SignedUpdate, parse_tensor_stream, split_wire, stream_record_count
from qhybrid.errors import QHybridError

__all__ = ["DEFAULT_POLICY", "Reason", "Verdict", "verify_update"]

DEFAULT_POLICY = ServerPolicy()


class Reason(StrEnum):
    """Stable reason codes of a :class:`Verdict` (values are part of the public interface)."""

    OK = "ok"
    MALFORMED = "malformed"  # unparsable bytes or envelope
    UNSUPPORTED_VERSION = "unsupported_version"  # envelope version this server does not speak
    RUN_MISMATCH = "run_mismatch"  # signed for another run (cross-run replay)
    ROUND_MISMATCH = "round_mismatch"  # signed for another round (replay of an earlier round)
    REPLAY = "replay"  # this exact nonce was already accepted
    UNSIGNED = "unsigned"  # no signature record at all (Flower replies)
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"  # retired past its grace window, or not yet valid
    KEY_CLIENT_MISMATCH = "key_client_mismatch"  # key of another client (relabelled update)
    SCHEME_MISMATCH = "scheme_mismatch"  # envelope names another scheme than the key (downgrade)
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"  # scheme outside the server's policy
    MODE_NOT_ALLOWED = "mode_not_allowed"
    BAD_SIGNATURE_LENGTH = "bad_signature_length"  # truncated, padded or empty signature
    BAD_SIGNATURE = "bad_signature"  # does not verify (tampered envelope, wrong context, garbled)
    DIGEST_MISMATCH = "digest_mismatch"  # tensors differ from the signed digest
    TOO_LARGE = "too_large"  # more tensor records or bytes than the policy allows
    # insider checks: a valid signature from a registered key, but an update the server refuses
    NODE_MISMATCH = (
        "node_mismatch"  # sent by another node than the one signed / bound to the client
    )
    DUPLICATE_SUBMISSION = "duplicate_submission"  # a second update of one client in one round
    EXAMPLES_OVER_CAP = "examples_over_cap"  # num_examples above what the client registered
    SCHEMA_MISMATCH = "schema_mismatch"  # tensor names, dtypes or shapes differ from the model's
    NON_FINITE = "non_finite"  # NaN or infinity in a weight
    OUT_OF_RANGE = "out_of_range"  # a finite weight beyond the policy's max_abs


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`verify_update`. ``reason`` is a stable :class:`Reason` code."""

    ok: bool
    reason: Reason
    detail: str = ""
    client_id: str | None = None
    key_id: str | None = None
    round: int | None = None
    hash_seconds: float = 0.0  # recomputing the state digest
    verify_seconds: float = 0.0  # the signature check itself (including "full"/"mu" hashing)
    update: SignedUpdate | None = field(default=None, repr=False, compare=False)  # when ok
    nonce: str | None = None


def verify_update(
    update: SignedUpdate | bytes | bytearray | memoryview,
    *,
    registry: KeyRegistry,
    run_id: str,
    round: int,
    guard: ReplayGuard,
    schema: Schema | None,
    policy: ServerPolicy = DEFAULT_POLICY,
    node: str | None = None,
    commit: bool = True,
) -> Verdict:
    """Decide whether the server may aggregate ``update``. Never raises on attacker-controlled input.

    Order (cheapest first; nothing is parsed past the header before the signature verifies):

    1. header: wire format, envelope version, run id, round, sending node (``node``, when the
       transport knows it, must equal the signed ``envelope.node``);
    2. key: known, not revoked, in its validity window, owned by the named client, of the named
       scheme (:meth:`KeyRegistry.check`); scheme and mode inside ``policy``;
    3. caps: tensor-record count (the stream's 4-byte head) and stream bytes;
    4. signature (in modes full/mu over the raw tensor stream), then the digest of the raw stream;
    5. only now the tensor records are parsed: schema equal to ``schema`` (the global model's;
       ``None`` skips this check), ``num_examples`` within the key's registered cap, every float
       finite and within ``policy.max_abs``;
    6. ``guard``: fresh nonce, first update of this client in this round, client and node bound
       to each other. With ``commit`` the accepted update is recorded in ``guard``; a rejected one
       never is, so a forgery cannot burn an honest client's slot.

    Returns:
        A :class:`Verdict`; on success ``verdict.update`` holds the parsed :class:`SignedUpdate`.
    """
    if isinstance(update, SignedUpdate):
        e, sig, stream = update.envelope, update.signature, None
    else:
        try:
            e, sig, stream = split_wire(update)
        except MalformedUpdateError as err:
            return Verdict(False, Reason.MALFORMED, str(err))
    v = _check_header(e, sig, stream, update, registry, run_id, round, policy, node)
    if isinstance(v, Verdict):
        return v
    rec, s = v

    def no(reason: Reason, detail: str = "", hash_s: float = 0.0, ver_s: float = 0.0) -> Verdict:
        return Verdict(False, reason, detail, e.client_id, e.key_id, e.round, hash_s, ver_s)

    chunks = [stream] if stream is not None else None
    t0 = time.perf_counter()
    good = _signature_ok(s, rec.public_key, e, sig, update, chunks)
    t1 = time.perf_counter()
    if not good:
        return no(Reason.BAD_SIGNATURE, "", 0.0, t1 - t0)
    hash_s = 0.0
    if e.mode == "digest":
        h = state_hasher(e.hash)
        for c in chunks or tensor_stream(update.tensors):  # type: ignore[union-attr]
            h.update(c)
        hash_s = time.perf_counter() - t1
        if h.hexdigest() != e.digest:
            return no(
                Reason.DIGEST_MISMATCH, "tensors differ from the signed digest", hash_s, t1 - t0
            )
    if stream is not None:
        try:
            update = SignedUpdate(
                e, sig, parse_tensor_stream(stream, max_records=policy.max_records)
            )
        except MalformedUpdateError as err:
            return no(Reason.MALFORMED, str(err), hash_s, t1 - t0)
    u: SignedUpdate = update  # type: ignore[assignment]
    bad = _content_problem(u, schema, rec.max_examples, policy)
    if bad is not None:
        return no(bad[0], bad[1], hash_s, t1 - t0)
    code = guard.check(run_id, round, e.client_id, e.nonce, node)
    if code != "ok":
        return no(Reason(code), f"client {e.client_id!r}, node {node!r}", hash_s, t1 - t0)
    if commit:
        guard.admit(run_id, round, e.client_id, e.nonce, node)
    return Verdict(True, Reason.OK, "", e.client_id, e.key_id, e.round, hash_s, t1 - t0, u, e.nonce)


def _check_header(
    e: Envelope,
    sig: bytes,
    stream: memoryview | None,
    update: Any,
    registry: KeyRegistry,
    run_id: str,
    round: int,
    policy: ServerPolicy,
    node: str | None,
) -> Verdict | tuple[KeyRecord, SignatureScheme]:
    """Steps 1-3 of :func:`verify_update`: a rejecting Verdict, or the key record and scheme."""

    def no(reason: Reason, detail: str = "") -> Verdict:
        return Verdict(False, reason, detail, e.client_id, e.key_id, e.round)

    if e.version != ENVELOPE_VERSION:
        return no(Reason.UNSUPPORTED_VERSION, f"envelope version {e.version}")
    if e.mode not in MODES or e.hash not in HASHES:
        return no(Reason.MALFORMED, f"unknown mode {e.mode!r} or hash {e.hash!r}")
    if e.run_id != run_id:
        return no(Reason.RUN_MISMATCH, f"signed for run {e.run_id!r}, this is {run_id!r}")
    if e.round != round:
        return no(Reason.ROUND_MISMATCH, f"signed for round {e.round}, this is round {round}")
    if node is not None and e.node != node:
        return no(Reason.NODE_MISMATCH, f"signed for node {e.node!r}, sent by node {node!r}")
    rec, code = registry.check(e.key_id, client_id=e.client_id, scheme=e.scheme, round=round)
    if code != "ok" or rec is None:
        return no(Reason(code))
    if e.scheme not in policy.allowed_schemes:
        return no(Reason.SCHEME_NOT_ALLOWED, e.scheme)
    if e.mode not in policy.allowed_modes:
        return no(Reason.MODE_NOT_ALLOWED, e.mode)
    if e.hash not in policy.allowed_hashes:
        return no(Reason.MODE_NOT_ALLOWED, f"digest hash {e.hash!r} is outside the policy")
    try:
        s = get_scheme(rec.scheme)
    except QHybridError as err:
        return no(Reason.SCHEME_NOT_ALLOWED, str(err))
    if len(sig) != s.signature_size:
        return no(Reason.BAD_SIGNATURE_LENGTH, f"{len(sig)} != {s.signature_size}")
    if (e.mode == "digest") != bool(e.digest):
        return no(Reason.MALFORMED, "digest must be set in mode 'digest' and only there")
    if e.mode == "mu" and not s.supports_mu:
        return no(Reason.MODE_NOT_ALLOWED, f"{s.name} ({s.backend}) cannot verify mode 'mu'")
    if stream is not None:
        try:
            count = stream_record_count(stream)
        except MalformedUpdateError as err:
            return no(Reason.MALFORMED, str(err))
        n_bytes = len(stream)
    else:
        count = len(update.tensors)
        n_bytes = sum(a.nbytes for a in update.tensors.values())
    if count > policy.max_records or n_bytes > policy.max_update_bytes:
        return no(
            Reason.TOO_LARGE,
            f"{count} records / {n_bytes} bytes exceed the policy's "
            f"{policy.max_records} / {policy.max_update_bytes}",
        )
    return rec, s


def _signature_ok(
    s: SignatureScheme, pk: bytes, e: Envelope, sig: bytes, update: Any, chunks: list[Any] | None
) -> bool:
    """The signature over the envelope (and, in modes full/mu, the raw tensor stream)."""

    def message() -> Iterator[bytes | memoryview]:
        yield e.to_bytes()
        if e.mode != "digest":
            yield from chunks if chunks is not None else tensor_stream(update.tensors)

    if e.mode == "mu":
        h = s.mu_hasher(pk, CONTEXT)
        for chunk in message():
            h.update(chunk)
        return s.verify_mu(pk, h.finalize(), sig)
    return s.verify(pk, b"".join(message()), sig, CONTEXT)


def _content_problem(
    u: SignedUpdate, schema: Schema | None, max_examples: int | None, policy: ServerPolicy
) -> tuple[Reason, str] | None:
    """Step 5 of :func:`verify_update` on the parsed tensors: the first problem, or None."""
    if schema is not None and (diff := schema_difference(schema, u.tensors)):
        return Reason.SCHEMA_MISMATCH, diff
    n = u.envelope.num_examples
    if max_examples is not None and n > max_examples:
        return Reason.EXAMPLES_OVER_CAP, f"num_examples={n} > registered {max_examples}"
    if (bad := value_problem(u.tensors.items(), policy.max_abs)) is not None:
        return Reason(bad), f"max_abs={policy.max_abs}"
    return None
