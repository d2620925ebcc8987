"""Verifying a signed update on the server, cheapest check first, with a stable reason code.

:func:`verify_update` never raises on attacker-controlled input: it returns a :class:`Verdict` whose
``reason`` is a :class:`Reason`. Nothing past the header is parsed before the signature verifies.
:class:`~pqc_fl.server.RoundVerifier` runs it over a whole round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from pqc_fl.envelope import (
    CONTEXT,
    ENVELOPE_VERSION,
    HASHES,
    MODES,
    Envelope,
    MalformedUpdateError,
    canonical_tensors,
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
    # sent by another node than the one signed or bound to the client; or, when the transport
    # names no sender, signed for another node than the one registered with the key
    NODE_MISMATCH = "node_mismatch"
    DUPLICATE_SUBMISSION = "duplicate_submission"  # a second update of one client in one round
    EXAMPLES_OVER_CAP = "examples_over_cap"  # num_examples above what the client registered
    NO_EXAMPLES = "no_examples"  # num_examples < 1 (an update without weight in FedAvg)
    SCHEMA_MISMATCH = "schema_mismatch"  # tensor names, dtypes or shapes differ from the model's
    NON_FINITE = "non_finite"  # NaN or infinity in a weight
    OUT_OF_RANGE = "out_of_range"  # a finite weight beyond the policy's max_abs
    NON_FINITE_METRIC = "non_finite_metric"  # NaN or infinity in a signed metric
    METRIC_OUT_OF_RANGE = "metric_out_of_range"  # a finite metric beyond policy.max_abs_metric


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

    1. header: wire format, envelope version, run id, round;
    2. key: known, not revoked, in its validity window, owned by the named client, of the named
       scheme (:meth:`KeyRegistry.check`); scheme and mode inside ``policy``; the sending node:
       ``node`` (when the transport knows it) must equal the signed ``envelope.node``, and when the
       transport names no sender (``node=None``) the signed node must be the one registered with
       the key (``""`` if none), so a client cannot claim another node;
    3. caps: tensor-record count (the stream's 4-byte head) and stream bytes;
    4. signature (in modes full/mu over the raw tensor stream), then the digest of the raw stream;
    5. only now the tensor records are parsed: schema equal to ``schema`` (the global model's;
       ``None`` skips this check), ``1 <= num_examples <=`` the key's registered cap, every float
       weight finite and within ``policy.max_abs``, every signed metric finite and within
       ``policy.max_abs_metric``;
    6. ``guard``: fresh nonce, first update of this client in this round, client and node bound
       to each other. With ``commit`` the accepted update is recorded in ``guard``; a rejected one
       never is, so a forgery cannot burn an honest client's slot.

    Returns:
        A :class:`Verdict`; on success ``verdict.update`` holds the parsed :class:`SignedUpdate`.
    """
    got = _receive(update)
    if isinstance(got, Verdict):
        return got
    e = got.envelope
    checked = _check_header(got, registry, run_id, round, policy, node)
    if isinstance(checked, Verdict):
        return checked
    rec, scheme = checked

    def no(reason: Reason, detail: str = "", hash_s: float = 0.0, ver_s: float = 0.0) -> Verdict:
        return Verdict(False, reason, detail, e.client_id, e.key_id, e.round, hash_s, ver_s)

    t0 = time.perf_counter()
    good = _signature_ok(scheme, rec.public_key, got)
    t1 = time.perf_counter()
    if not good:
        return no(Reason.BAD_SIGNATURE, "", 0.0, t1 - t0)
    hash_s = 0.0
    if e.mode == "digest":
        same = _digest_ok(got)
        hash_s = time.perf_counter() - t1
        if not same:
            return no(
                Reason.DIGEST_MISMATCH, "tensors differ from the signed digest", hash_s, t1 - t0
            )
    try:
        tensors = got.parsed(policy.max_records)
    except MalformedUpdateError as err:
        return no(Reason.MALFORMED, str(err), hash_s, t1 - t0)
    u = SignedUpdate(e, got.signature, tensors)
    bad = _content_problem(u, schema, rec.max_examples, policy)
    if bad is not None:
        return no(bad[0], bad[1], hash_s, t1 - t0)
    code = guard.check(run_id, round, e.client_id, e.nonce, node)
    if code != "ok":
        return no(Reason(code), f"client {e.client_id!r}, node {node!r}", hash_s, t1 - t0)
    if commit:
        guard.admit(run_id, round, e.client_id, e.nonce, node)
    return Verdict(True, Reason.OK, "", e.client_id, e.key_id, e.round, hash_s, t1 - t0, u, e.nonce)


@dataclass(frozen=True)
class _Received:
    """An update as received: its envelope and signature, and either the raw tensor stream (from
    the wire, not yet parsed) or tensors already in memory (a :class:`SignedUpdate` object)."""

    envelope: Envelope
    signature: bytes
    stream: memoryview | None = None
    tensors: dict[str, np.ndarray] | None = None

    def chunks(self) -> Iterable[bytes | memoryview]:
        """The canonical tensor stream, chunk by chunk."""
        if self.stream is not None:
            return [self.stream]
        return tensor_stream(self.tensors or {})

    def size(self) -> tuple[int, int]:
        """``(tensor records, bytes)``: the stream's head and length, or the arrays' count and size."""
        if self.stream is not None:
            return stream_record_count(self.stream), len(self.stream)
        tensors = self.tensors or {}
        return len(tensors), sum(a.nbytes for a in tensors.values())

    def parsed(self, max_records: int) -> dict[str, np.ndarray]:
        """The tensors (parsing the stream only now); raises MalformedUpdateError."""
        if self.stream is not None:
            return parse_tensor_stream(self.stream, max_records=max_records)
        return self.tensors or {}


def _receive(update: SignedUpdate | bytes | bytearray | memoryview) -> _Received | Verdict:
    """The header of a wire blob, or a SignedUpdate object re-checked as a parser would check it
    (canonical envelope, canonical tensors); a ``malformed`` Verdict otherwise."""
    try:
        if not isinstance(update, SignedUpdate):
            env, sig, stream = split_wire(update)
            return _Received(env, sig, stream=stream)
        env = Envelope.from_bytes(update.envelope.to_bytes())  # types and limits of the parser
        if not isinstance(update.signature, bytes):
            raise MalformedUpdateError("the signature must be bytes")
        return _Received(env, update.signature, tensors=canonical_tensors(update.tensors))
    except (QHybridError, TypeError, ValueError, AttributeError, OverflowError) as err:
        return Verdict(False, Reason.MALFORMED, str(err))


def _check_header(
    got: _Received,
    registry: KeyRegistry,
    run_id: str,
    round: int,
    policy: ServerPolicy,
    node: str | None,
) -> Verdict | tuple[KeyRecord, SignatureScheme]:
    """Steps 1-3 of :func:`verify_update`: a rejecting Verdict, or the key record and scheme."""
    e, sig = got.envelope, got.signature

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
    if node is None and e.node != rec.node:
        return no(
            Reason.NODE_MISMATCH,
            f"signed for node {e.node!r}, but the transport names no sender and key "
            f"{rec.key_id} is registered for node {rec.node!r}",
        )
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
    try:
        count, n_bytes = got.size()
    except MalformedUpdateError as err:
        return no(Reason.MALFORMED, str(err))
    if count > policy.max_records or n_bytes > policy.max_update_bytes:
        return no(
            Reason.TOO_LARGE,
            f"{count} records / {n_bytes} bytes exceed the policy's "
            f"{policy.max_records} / {policy.max_update_bytes}",
        )
    return rec, s


def _signature_ok(s: SignatureScheme, pk: bytes, got: _Received) -> bool:
    """The signature over the envelope (and, in modes full/mu, the raw tensor stream)."""
    e = got.envelope

    def message() -> Iterator[bytes | memoryview]:
        yield e.to_bytes()
        if e.mode != "digest":
            yield from got.chunks()

    if e.mode == "mu":
        h = s.mu_hasher(pk, CONTEXT)
        for chunk in message():
            h.update(chunk)
        return s.verify_mu(pk, h.finalize(), got.signature)
    return s.verify(pk, b"".join(message()), got.signature, CONTEXT)


def _digest_ok(got: _Received) -> bool:
    """Whether the (raw) tensor stream hashes to the signed digest."""
    h = state_hasher(got.envelope.hash)
    for chunk in got.chunks():
        h.update(chunk)
    return bool(h.hexdigest() == got.envelope.digest)


def _content_problem(
    u: SignedUpdate, schema: Schema | None, max_examples: int | None, policy: ServerPolicy
) -> tuple[Reason, str] | None:
    """Step 5 of :func:`verify_update` on the parsed tensors: the first problem, or None."""
    if schema is not None and (diff := schema_difference(schema, u.tensors)):
        return Reason.SCHEMA_MISMATCH, diff
    n = u.envelope.num_examples
    if n < 1:
        return Reason.NO_EXAMPLES, f"num_examples={n}; an update must stand for >= 1 example"
    if max_examples is not None and n > max_examples:
        return Reason.EXAMPLES_OVER_CAP, f"num_examples={n} > registered {max_examples}"
    if (bad := value_problem(u.tensors.items(), policy.max_abs)) is not None:
        return Reason(bad), f"max_abs={policy.max_abs}"
    for name, value in u.envelope.metrics:
        if not math.isfinite(value):
            return Reason.NON_FINITE_METRIC, f"metric {name!r} = {value}"
        if policy.max_abs_metric is not None and abs(value) > policy.max_abs_metric:
            return (
                Reason.METRIC_OUT_OF_RANGE,
                f"metric {name!r} = {value:g} beyond max_abs_metric={policy.max_abs_metric:g}",
            )
    return None
