"""The wire format of a signed update, and its bounds-checked parser.

:meth:`SignedUpdate.to_bytes` (big-endian)::

    b"QHFL" | u8 wire version (1) | u32 len(envelope) | envelope | u16 len(signature) | signature
    | u32 tensor count | tensor records (the canonical stream of :func:`~pqc_fl.envelope.tensor_stream`)

:func:`split_wire` reads the header only (envelope, signature, the raw tensor stream), so the
verifier can check the signature before a single tensor record is parsed;
:func:`parse_tensor_stream` then reads the records. Both check every length against the buffer and
raise :class:`~pqc_fl.envelope.MalformedUpdateError` on any deviation, never anything else.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from pqc_fl.envelope import (
    DTYPES,
    MAX_ENVELOPE,
    Envelope,
    MalformedUpdateError,
    tensor_stream,
)

__all__ = [
    "SignedUpdate",
    "parse_tensor_stream",
    "split_wire",
    "stream_record_count",
]

_MAGIC = b"QHFL"
_WIRE_VERSION = 1
_MAX_NDIM = 32


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
        """The wire format (module docstring)."""
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
    if n_env > MAX_ENVELOPE:
        raise MalformedUpdateError(f"envelope length {n_env} exceeds {MAX_ENVELOPE}")
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
        if isinstance(data, memoryview) and data.readonly and data.c_contiguous:
            self.buf = data.cast("B")
        else:
            self.buf = memoryview(bytes(data))
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
            if dt not in DTYPES:
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
