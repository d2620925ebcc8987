"""What a client signs: the canonical tensor stream, its digest and the envelope.

A client signs an :class:`Envelope` that binds its update to everything a forger would want to
change: protocol version, scheme, signing mode, run id, round, client id, key id, a fresh 128-bit
nonce, a digest of the tensors, the number of examples, the training metrics and the transport
node. The envelope is encoded as canonical JSON (sorted keys, no spaces, ASCII only, floats as exact
``float.hex`` strings), so the same update always gives the same bytes and a parser can insist that
what it read re-encodes to the identical bytes.

The tensors are serialised in one canonical stream used for the digest, for the "full" message and
for the wire format (:mod:`pqc_fl.wire`): the tensor names in sorted order, each as::

    u16 len(name) | name (UTF-8) | u8 len(dtype) | dtype (numpy, little-endian, e.g. "<f4")
    | u8 ndim | ndim x u64 shape | u64 nbytes | raw C-order bytes

and the digest is ``H("qhybrid-fl/v1/state" | u32 count | records...)`` with ``H`` SHA-256 (default)
or BLAKE3.

Three signing modes (all under the FIPS 204/205 context string ``CONTEXT``), see
:func:`signed_message`:

* ``"digest"`` (default): sign the envelope, which carries the digest. The signature covers ~300
  bytes whatever the model size; the verifier recomputes the digest from the received tensors.
* ``"full"``: sign ``envelope || tensor stream`` directly, as arXiv 2409.04637 does; the envelope's
  digest is empty. Costs the scheme's own hashing of the whole update (and for SLH-DSA, several
  passes over it).
* ``"mu"``: ML-DSA ExternalMu (FIPS 204, Algorithm 7 line 6): the same message as ``"full"`` is
  streamed chunk by chunk into ``mu = SHAKE256(tr || M', 64)`` with ``cryptography``'s
  ``MLDSAMuHasher``, never concatenated in memory, and ``sign_mu(mu)`` gives an ordinary ML-DSA
  signature of that message. Only ML-DSA on the ``cryptography`` backend supports it.

The flow of an update: the client trains (:mod:`pqc_fl.task`), signs (:mod:`pqc_fl.sign`), sends
it over the wire (:mod:`pqc_fl.wire`); the server verifies it (:mod:`pqc_fl.verify`, with
:mod:`pqc_fl.keys` and :mod:`pqc_fl.policy`), a whole round at a time (:mod:`pqc_fl.server`), and
aggregates the verified ones (:mod:`pqc_fl.strategy`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from qhybrid.errors import QHybridError

__all__ = [
    "CONTEXT",
    "ENVELOPE_VERSION",
    "HASHES",
    "MODES",
    "Envelope",
    "Hash",
    "MalformedUpdateError",
    "Mode",
    "canonical_tensors",
    "metrics_tuple",
    "signed_message",
    "state_digest",
    "state_hasher",
    "tensor_stream",
]

Mode = Literal["digest", "full", "mu"]  # what the signature covers (module docstring)
Hash = Literal["sha256", "blake3"]  # the state digest's hash in mode "digest"
MODES: tuple[Mode, ...] = get_args(Mode)
HASHES: tuple[Hash, ...] = get_args(Hash)
ENVELOPE_VERSION = 2  # 2: the envelope names the transport node (Flower node id) it is sent from
CONTEXT = b"qhybrid-fl/v1/update"  # FIPS 204/205 context string: signatures are only valid here
MAX_METRICS = 256  # metrics in one envelope
_STATE_DOMAIN = b"qhybrid-fl/v1/state"
_MAX_ID = 256  # characters in run/client/key ids
MAX_ENVELOPE = 1 << 20  # bytes; a real envelope is a few hundred
_MAX_NAME = 4096  # bytes in a tensor name
# dtypes an update may carry, as little-endian numpy type strings
DTYPES = frozenset(
    ["<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"]
)
_ENVELOPE_KEYS = frozenset(
    ["v", "alg", "mode", "run_id", "round", "client_id", "key_id", "nonce", "digest",
     "num_examples", "metrics", "node", "hash"]
)  # fmt: skip


class MalformedUpdateError(QHybridError):
    """Bytes that are not a well-formed signed update (reason code ``malformed``)."""


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
    if a.dtype.str not in DTYPES:
        raise QHybridError(
            f"tensor {name!r} has dtype {a.dtype} ({a.dtype.str}); signed updates carry "
            f"{sorted(DTYPES)}"
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
        yield a.reshape(-1).view(np.uint8).data


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
        isinstance(v, np.ndarray) and v.dtype.str in DTYPES and v.flags.c_contiguous
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
        """The envelope's JSON object (metrics as exact ``float.hex`` strings)."""
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
        if len(data) > MAX_ENVELOPE:
            raise MalformedUpdateError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
        try:
            d = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise MalformedUpdateError(f"envelope is not ASCII JSON: {err}") from None
        if not isinstance(d, dict) or set(d) != _ENVELOPE_KEYS:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise MalformedUpdateError(f"envelope fields {got} != {sorted(_ENVELOPE_KEYS)}")

        def field_(k: str, typ: type, lo: int = 0, hi: int = _MAX_ID) -> Any:
            v = d[k]
            size = len(v) if isinstance(v, str) else v  # a string's length, an int's value
            if type(v) is not typ:
                raise MalformedUpdateError(f"envelope field {k!r} must be {typ.__name__}")
            if not lo <= size <= hi:
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


def metrics_tuple(metrics: Mapping[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """Metrics as the envelope holds them: ``(name, float)`` pairs sorted by name; raises
    QHybridError for a name that is not a string or a value that is not a real number."""
    if metrics is None:
        return ()
    if not isinstance(metrics, Mapping):
        raise QHybridError(f"metrics={metrics!r:.60} must be a mapping of name -> number")
    out = []
    for k, v in metrics.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
            raise QHybridError(f"metric {k!r}={v!r:.40}: signed metrics are str -> int/float")
        try:
            out.append((k, float(v)))
        except OverflowError:
            raise QHybridError(f"metric {k!r} is too large for a float64") from None
    return tuple(sorted(out))


def signed_message(
    envelope: Envelope, tensors: Mapping[str, np.ndarray]
) -> Iterator[bytes | memoryview]:
    """The chunks that the signature covers: the envelope, then (modes full/mu) the tensor stream."""
    yield envelope.to_bytes()
    if envelope.mode != "digest":
        yield from tensor_stream(tensors)
