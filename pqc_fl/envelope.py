"""Signed model updates: a canonical, deterministic envelope, signing, verification and the wire format.

A client signs an :class:`Envelope` that binds its update to everything a forger would want to
change: protocol version, scheme, signing mode, run id, round, client id, key id, a fresh 128-bit
nonce, a SHA-256 digest of the tensors, the number of examples and the training metrics. The
envelope is encoded as canonical JSON (sorted keys, no spaces, ASCII only, floats as exact
``float.hex`` strings), so the same update always gives the same bytes and a parser can insist that
what it read re-encodes to the identical bytes.

The tensors are serialised in one canonical stream used for the digest, for the "full" message and
for the wire format: the tensor names in sorted order, each as::

    u16 len(name) | name (UTF-8) | u8 len(dtype) | dtype (numpy, little-endian, e.g. "<f4")
    | u8 ndim | ndim x u64 shape | u64 nbytes | raw C-order bytes

and the digest is ``SHA-256("qhybrid-fl/v1/state" | u32 count | records...)``.

Three signing modes (all under the FIPS 204/205 context string ``CONTEXT``):

* ``"digest"`` (default): sign the envelope, which carries the digest. The signature covers ~300
  bytes whatever the model size; the verifier recomputes the digest from the received tensors.
* ``"full"``: sign ``envelope || tensor stream`` directly, as arXiv 2409.04637 does; the envelope's
  digest is empty. Costs the scheme's own hashing of the whole update (and for SLH-DSA, several
  passes over it).
* ``"mu"``: ML-DSA ExternalMu (FIPS 204, Algorithm 7 line 6): the same message as ``"full"`` is
  streamed chunk by chunk into ``mu = SHAKE256(tr || M', 64)`` with ``cryptography``'s
  ``MLDSAMuHasher``, never concatenated in memory, and ``sign_mu(mu)`` gives an ordinary ML-DSA
  signature of that message. Only ML-DSA on the ``cryptography`` backend supports it.

Wire format of :meth:`SignedUpdate.to_bytes` (big-endian)::

    b"QHFL" | u8 wire version (1) | u32 len(envelope) | envelope | u16 len(signature) | signature
    | u32 tensor count | tensor records (as above)

:meth:`SignedUpdate.from_bytes` checks every length against the buffer and raises
:class:`MalformedUpdateError` on any deviation; it never raises anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from pqc_fl.keys import KeyRecord, KeyRegistry
from pqc_fl.policy import (
    ReplayGuard,
    Schema,
    ServerPolicy,
    schema_difference,
    value_problem,
)
from pqc_fl.schemes import SignatureScheme, get_scheme
from qhybrid.errors import QHybridError

__all__ = [
    "CONTEXT",
    "ENVELOPE_VERSION",
    "HASHES",
    "MODES",
    "Envelope",
    "MalformedUpdateError",
    "DEFAULT_POLICY",
    "Reason",
    "SignedUpdate",
    "Verdict",
    "canonical_tensors",
    "sign_update",
    "signed_message",
    "split_wire",
    "parse_tensor_stream",
    "state_digest",
    "state_hasher",
    "tensor_stream",
    "verify_update",
]

ENVELOPE_VERSION = 2  # 2: the envelope names the transport node (Flower node id) it is sent from
CONTEXT = b"qhybrid-fl/v1/update"  # FIPS 204/205 context string: signatures are only valid here
MODES = ("digest", "full", "mu")
HASHES = ("sha256", "blake3")  # state-digest hashes (mode "digest")
DEFAULT_POLICY = ServerPolicy()
_MAGIC = b"QHFL"
_WIRE_VERSION = 1
_STATE_DOMAIN = b"qhybrid-fl/v1/state"
_MAX_ID = 256  # characters in run/client/key ids
_MAX_ENVELOPE = 1 << 20  # bytes; a real envelope is a few hundred
_MAX_NAME = 4096  # bytes in a tensor name
_MAX_NDIM = 32
# dtypes an update may carry, as little-endian numpy type strings
_DTYPES = frozenset(
    ["<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"]
)
_ENVELOPE_KEYS = frozenset(
    ["v", "alg", "mode", "run_id", "round", "client_id", "key_id", "nonce", "digest",
     "num_examples", "metrics", "node", "hash"]
)  # fmt: skip


class MalformedUpdateError(QHybridError):
    """Bytes that are not a well-formed signed update (reason code ``malformed``)."""


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


# ------------------------------------------------------------------------------------------------
# canonical tensors
# ------------------------------------------------------------------------------------------------


def _as_numpy(name: str, t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor; imported lazily so numpy-only users need no torch
        t = t.detach()
        if str(t.dtype) == "torch.bfloat16":
            raise QHybridError(
                f"tensor {name!r} is bfloat16, which has no numpy dtype; cast the update to "
                "float32 (or float16) before signing"
            )
        t = t.cpu().numpy()
    a = np.ascontiguousarray(np.asarray(t))
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if a.dtype.str not in _DTYPES:
        raise QHybridError(
            f"tensor {name!r} has dtype {a.dtype} ({a.dtype.str}); signed updates carry "
            f"{sorted(_DTYPES)}"
        )
    return a


def canonical_tensors(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The update as C-contiguous little-endian numpy arrays, in sorted name order (zero-copy on CPU)."""
    for k in state:
        if not isinstance(k, str) or not k or len(k.encode()) > _MAX_NAME:
            raise QHybridError(
                f"tensor name {k!r} must be a non-empty string of <= {_MAX_NAME} bytes"
            )
    return {k: _as_numpy(k, state[k]) for k in sorted(state)}


def _record_header(name: str, a: np.ndarray) -> bytes:
    nb, dt = name.encode(), a.dtype.str.encode()
    return (
        struct.pack(">H", len(nb))
        + nb
        + struct.pack(">B", len(dt))
        + dt
        + struct.pack(f">B{a.ndim}Q", a.ndim, *a.shape)
        + struct.pack(">Q", a.nbytes)
    )


def tensor_stream(tensors: Mapping[str, np.ndarray]) -> Iterator[bytes | memoryview]:
    """The canonical serialisation of (already canonical) tensors, chunk by chunk, without copies."""
    yield struct.pack(">I", len(tensors))
    for name, a in tensors.items():
        yield _record_header(name, a)
        yield memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def state_hasher(hash: str = "sha256") -> Any:
    """A fresh hash object (``update``/``digest``) over the state domain tag.

    ``"sha256"`` (FIPS 180-4, hashlib) or ``"blake3"`` (256-bit output, the ``blake3`` package:
    the same 128-bit collision security, several times faster on SIMD CPUs; see
    docs/pqc_fl.md#hashing). Raises QHybridError for another name.
    """
    if hash == "sha256":
        return hashlib.sha256(_STATE_DOMAIN)
    if hash == "blake3":
        try:
            from blake3 import blake3
        except ImportError:
            raise QHybridError(
                "hash='blake3' needs the blake3 package: pip install 'qhybrid[fl]'"
            ) from None
        return blake3(_STATE_DOMAIN)
    raise QHybridError(f"hash={hash!r} is not one of {HASHES}")


def state_digest(state: Mapping[str, Any], hash: str = "sha256") -> bytes:
    """``hash`` over the domain tag and the canonical tensor stream (names, dtypes, shapes, bytes)."""
    tensors = state if _is_canonical(state) else canonical_tensors(state)
    h = state_hasher(hash)
    for chunk in tensor_stream(tensors):
        h.update(chunk)
    return bytes(h.digest())


def _is_canonical(state: Mapping[str, Any]) -> bool:
    return list(state) == sorted(state) and all(
        isinstance(v, np.ndarray) and v.dtype.str in _DTYPES and v.flags.c_contiguous
        for v in state.values()
    )


# ------------------------------------------------------------------------------------------------
# envelope
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The signed header of an update. ``metrics`` are finite or not, encoded exactly."""

    scheme: str
    mode: str
    run_id: str
    round: int
    client_id: str
    key_id: str
    nonce: str  # 32 hex characters (128 random bits)
    digest: str  # 64 hex characters of state_digest in "digest" mode, "" otherwise
    num_examples: int
    metrics: tuple[tuple[str, float], ...] = ()  # sorted by name
    node: str = ""  # the transport node that delivers the update (Flower node id), "" if none
    hash: str = "sha256"  # the digest's hash (HASHES); signed, so it cannot be swapped
    version: int = ENVELOPE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "alg": self.scheme,
            "mode": self.mode,
            "run_id": self.run_id,
            "round": self.round,
            "client_id": self.client_id,
            "key_id": self.key_id,
            "nonce": self.nonce,
            "digest": self.digest,
            "num_examples": self.num_examples,
            "metrics": {k: float(v).hex() for k, v in self.metrics},
            "node": self.node,
            "hash": self.hash,
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, ASCII only."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse canonical envelope bytes; anything else raises :class:`MalformedUpdateError`."""
        if len(data) > _MAX_ENVELOPE:
            raise MalformedUpdateError(f"envelope of {len(data)} bytes exceeds {_MAX_ENVELOPE}")
        try:
            d = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise MalformedUpdateError(f"envelope is not ASCII JSON: {err}") from None
        if not isinstance(d, dict) or set(d) != _ENVELOPE_KEYS:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise MalformedUpdateError(f"envelope fields {got} != {sorted(_ENVELOPE_KEYS)}")

        def field_(k: str, typ: type, lo: int = 0, hi: int = _MAX_ID) -> Any:
            v: Any = d[k]
            if type(v) is not typ:
                raise MalformedUpdateError(f"envelope field {k!r} must be {typ.__name__}")
            n: int = len(v) if isinstance(v, str) else v  # type: ignore[assignment]
            if not lo <= n <= hi:
                raise MalformedUpdateError(f"envelope field {k!r} out of range [{lo}, {hi}]")
            return v

        metrics = d["metrics"]
        if not isinstance(metrics, dict) or len(metrics) > 256:
            raise MalformedUpdateError("envelope field 'metrics' must be an object of <= 256 items")
        try:
            parsed = tuple(sorted((str(k), float.fromhex(v)) for k, v in metrics.items()))
        except (TypeError, ValueError, OverflowError) as err:
            raise MalformedUpdateError(
                f"envelope metrics must be float.hex strings: {err}"
            ) from None
        env = cls(
            scheme=field_("alg", str, 1, 64),
            mode=field_("mode", str, 1, 16),
            run_id=field_("run_id", str, 1),
            round=field_("round", int, 0, 2**31 - 1),
            client_id=field_("client_id", str, 1),
            key_id=field_("key_id", str, 1),
            nonce=field_("nonce", str, 32, 32),
            digest=field_("digest", str, 0, 64),
            num_examples=field_("num_examples", int, 0, 2**53),
            metrics=parsed,
            node=field_("node", str, 0),
            hash=field_("hash", str, 1, 16),
            version=field_("v", int, 0, 255),
        )
        if env.to_bytes() != data:
            raise MalformedUpdateError("envelope is not in canonical form")
        return env


def _metrics_tuple(metrics: Mapping[str, Any] | None) -> tuple[tuple[str, float], ...]:
    out = []
    for k, v in sorted((metrics or {}).items()):
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise QHybridError(f"metric {k!r}={v!r}: signed metrics are str -> int/float")
        if isinstance(v, int) and not math.isfinite(float(v)):
            raise QHybridError(f"metric {k!r} is too large for a float64")
        out.append((k, float(v)))
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# signed updates
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedUpdate:
    """An envelope, its signature and the tensors it describes."""

    envelope: Envelope
    signature: bytes = field(repr=False)
    tensors: dict[str, np.ndarray] = field(repr=False)  # canonical: sorted, little-endian
    # seconds spent by sign_update: {"digest": ..., "sign": ...}; not serialised or compared
    timings: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        e = self.envelope
        return (
            f"SignedUpdate(client={e.client_id!r}, round={e.round}, scheme={e.scheme}, "
            f"mode={e.mode}, tensors={len(self.tensors)}, signature={len(self.signature)} B)"
        )

    @property
    def overhead_bytes(self) -> int:
        """Bytes the signing adds to a bare tensor payload: envelope + signature + framing."""
        return len(self.envelope.to_bytes()) + len(self.signature) + 4 + 1 + 4 + 2

    def to_bytes(self) -> bytes:
        env = self.envelope.to_bytes()
        head = _MAGIC + struct.pack(">BI", _WIRE_VERSION, len(env)) + env
        head += struct.pack(">H", len(self.signature)) + self.signature
        return head + b"".join(bytes(c) for c in tensor_stream(self.tensors))

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, max_records: int | None = None
    ) -> SignedUpdate:
        """Parse :meth:`to_bytes` output; raises :class:`MalformedUpdateError` on anything else."""
        env, sig, stream = split_wire(data)
        return cls(env, sig, parse_tensor_stream(stream, max_records=max_records))


def split_wire(data: bytes | bytearray | memoryview) -> tuple[Envelope, bytes, memoryview]:
    """``(envelope, signature, raw tensor stream)``: the header only, no tensor record parsed.

    The verifier checks the envelope and the signature (over the raw stream in modes full/mu)
    before :func:`parse_tensor_stream` touches a record, so a forged blob costs the same whatever
    its record count. Raises :class:`MalformedUpdateError`.
    """
    r = _Reader(data)
    if bytes(r.take(4, "magic")) != _MAGIC:
        raise MalformedUpdateError("not a signed update (bad magic; expected b'QHFL')")
    (wire,) = r.unpack(">B", "wire version")
    if wire != _WIRE_VERSION:
        raise MalformedUpdateError(f"wire version {wire} is not supported (expected 1)")
    (n_env,) = r.unpack(">I", "envelope length")
    if n_env > _MAX_ENVELOPE:
        raise MalformedUpdateError(f"envelope length {n_env} exceeds {_MAX_ENVELOPE}")
    env = Envelope.from_bytes(bytes(r.take(n_env, "envelope")))
    (n_sig,) = r.unpack(">H", "signature length")
    sig = bytes(r.take(n_sig, "signature"))
    return env, sig, r.buf[r.pos :]


def stream_record_count(stream: bytes | memoryview) -> int:
    """The tensor count at the head of a raw tensor stream (4 bytes; no record is read)."""
    if len(stream) < 4:
        raise MalformedUpdateError("truncated update: no tensor count")
    return int(struct.unpack(">I", stream[:4])[0])


class _Reader:
    """Bounds-checked reading of the wire format."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        # bytes(b) is b itself: no copy for bytes input; a read-only memoryview is kept as is
        ro = isinstance(data, memoryview) and data.readonly and data.c_contiguous
        self.buf = data.cast("B") if ro else memoryview(bytes(data))  # type: ignore[union-attr]
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise MalformedUpdateError(
                f"truncated update: {what} needs {n} bytes at offset {self.pos}, "
                f"{len(self.buf) - self.pos} left"
            )
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def tensors(self, max_records: int | None = None) -> dict[str, np.ndarray]:
        """The canonical tensor stream up to the end of the buffer (read-only zero-copy arrays)."""
        (count,) = self.unpack(">I", "tensor count")
        if max_records is not None and count > max_records:
            raise MalformedUpdateError(f"{count} tensor records exceed the cap of {max_records}")
        tensors: dict[str, np.ndarray] = {}
        last = None
        for i in range(count):
            (n_name,) = self.unpack(">H", f"tensor {i} name length")
            try:
                name = bytes(self.take(n_name, f"tensor {i} name")).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedUpdateError(f"tensor {i} name is not UTF-8") from None
            if not name or (last is not None and name <= last):
                raise MalformedUpdateError(
                    f"tensor names must be non-empty, unique and sorted ({name!r})"
                )
            last = name
            (n_dt,) = self.unpack(">B", "dtype length")
            dt = bytes(self.take(n_dt, "dtype")).decode("ascii", "replace")
            if dt not in _DTYPES:
                raise MalformedUpdateError(f"tensor {name!r} has unsupported dtype {dt!r}")
            (ndim,) = self.unpack(">B", "ndim")
            if ndim > _MAX_NDIM:
                raise MalformedUpdateError(f"tensor {name!r} has {ndim} dims (max {_MAX_NDIM})")
            shape = self.unpack(f">{ndim}Q", "shape")
            (nbytes,) = self.unpack(">Q", "nbytes")
            dtype = np.dtype(dt)
            if math.prod(shape) * dtype.itemsize != nbytes:
                raise MalformedUpdateError(
                    f"tensor {name!r}: shape {shape} x {dtype.itemsize} B != nbytes {nbytes}"
                )
            raw = self.take(nbytes, f"tensor {name!r} data")
            tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if self.pos != len(self.buf):
            raise MalformedUpdateError(
                f"{len(self.buf) - self.pos} trailing bytes after the last tensor"
            )
        return tensors


def parse_tensor_stream(
    data: bytes | bytearray | memoryview, *, max_records: int | None = None
) -> dict[str, np.ndarray]:
    """Parse the output of :func:`tensor_stream` (zero-copy arrays); at most ``max_records``."""
    return _Reader(data).tensors(max_records)


def signed_message(
    envelope: Envelope, tensors: Mapping[str, np.ndarray]
) -> Iterator[bytes | memoryview]:
    """The chunks that the signature covers: the envelope, then (modes full/mu) the tensor stream."""
    yield envelope.to_bytes()
    if envelope.mode != "digest":
        yield from tensor_stream(tensors)


def _sign_message(
    s: SignatureScheme, mode: str, sk: bytes, pk: bytes | None, env: Envelope, tensors: Any
) -> bytes:
    if mode == "mu":
        h = s.mu_hasher(pk if pk is not None else s.public_key_of(sk), CONTEXT)
        for chunk in signed_message(env, tensors):
            h.update(chunk)
        return s.sign_mu(sk, h.finalize())
    return s.sign(sk, b"".join(signed_message(env, tensors)), CONTEXT)


def sign_update(
    state_dict: Mapping[str, Any],
    *,
    scheme: str | SignatureScheme,
    secret_key: bytes,
    key_id: str,
    client_id: str,
    run_id: str,
    round: int,
    num_examples: int = 0,
    metrics: Mapping[str, float] | None = None,
    mode: str = "digest",
    nonce: bytes | None = None,
    public_key: bytes | None = None,
    node: str = "",
    hash: str = "sha256",
) -> SignedUpdate:
    """Sign a model update (a state dict of torch tensors or numpy arrays).

    Args:
        state_dict: tensor name -> tensor; copied to host memory only if it is not already there.
        scheme: a scheme name or object; ``secret_key`` must belong to it.
        secret_key, key_id: the client's key and its registered id.
        client_id, run_id, round: what the update is for; the verifier checks all three.
        num_examples: local training examples (FedAvg weight); signed, so it cannot be inflated.
        metrics: training metrics reported with the update (signed exactly).
        mode: ``"digest"`` (default), ``"full"`` or ``"mu"`` (ML-DSA ExternalMu); see module doc.
        nonce: 16 bytes; random by default. Fixed nonces make signing deterministic input-wise.
        public_key: only used by ``"mu"`` on backends that cannot derive it from the secret key.
        node: the transport node that will deliver the update (on Flower: ``context.node_id``);
            a server that knows the sender rejects the update from any other node.
        hash: the digest's hash in mode ``"digest"``: ``"sha256"`` (default) or ``"blake3"``.

    Returns:
        The :class:`SignedUpdate` (serialise with ``to_bytes()``).
    """
    s = scheme if isinstance(scheme, SignatureScheme) else get_scheme(scheme)
    if mode not in MODES:
        raise QHybridError(f"mode={mode!r} is not one of {MODES}")
    if mode == "mu" and not s.supports_mu:
        raise QHybridError(
            f"mode='mu' needs ML-DSA ExternalMu, which {s.name} ({s.backend}) lacks; use an "
            "ml-dsa-* scheme on the 'cryptography' backend or mode='digest'"
        )
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise QHybridError(f"round={round!r} must be an int >= 0")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise QHybridError(f"num_examples={num_examples!r} must be an int >= 0")
    nonce = secrets.token_bytes(16) if nonce is None else nonce
    if len(nonce) != 16:
        raise QHybridError(f"nonce has {len(nonce)} bytes; it must have 16")
    tensors = canonical_tensors(state_dict)
    t0 = time.perf_counter()
    if hash not in HASHES:
        raise QHybridError(f"hash={hash!r} is not one of {HASHES}")
    digest = state_digest(tensors, hash).hex() if mode == "digest" else ""
    t1 = time.perf_counter()
    env = Envelope(
        scheme=s.name,
        mode=mode,
        run_id=run_id,
        round=round,
        client_id=client_id,
        key_id=key_id,
        nonce=nonce.hex(),
        digest=digest,
        num_examples=num_examples,
        metrics=_metrics_tuple(metrics),
        node=node,
        hash=hash,
    )
    try:
        env = Envelope.from_bytes(env.to_bytes())  # enforce the same limits a verifier applies
    except MalformedUpdateError as err:
        raise QHybridError(f"cannot sign this update: {err}") from None
    t2 = time.perf_counter()
    sig = _sign_message(s, mode, secret_key, public_key, env, tensors)
    timings = {"digest": t1 - t0, "sign": time.perf_counter() - t2}
    return SignedUpdate(env, sig, tensors, timings)


# ------------------------------------------------------------------------------------------------
# verification
# ------------------------------------------------------------------------------------------------


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
