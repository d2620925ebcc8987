"""Signing a model update on the client: digest (or stream) the tensors, sign the envelope.

:func:`sign_update` turns a state dict into a :class:`~pqc_fl.wire.SignedUpdate` (serialise it with
``to_bytes()``); what the signature covers in each mode is :func:`~pqc_fl.envelope.signed_message`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from pqc_fl.envelope import (
    CONTEXT,
    HASHES,
    MODES,
    Envelope,
    Hash,
    MalformedUpdateError,
    Mode,
    canonical_tensors,
    metrics_tuple,
    signed_message,
    state_digest,
)
from pqc_fl.schemes import SignatureScheme, get_scheme
from pqc_fl.wire import SignedUpdate
from qhybrid.errors import QHybridError

__all__ = ["sign_envelope", "sign_update"]


def sign_envelope(
    scheme: SignatureScheme,
    secret_key: bytes,
    envelope: Envelope,
    tensors: Mapping[str, Any],
    *,
    public_key: bytes | None = None,
) -> bytes:
    """The signature over :func:`~pqc_fl.envelope.signed_message` (under ``CONTEXT``).

    In mode ``"mu"`` the message is streamed into the FIPS 204 ExternalMu hasher (``public_key``
    is derived from ``secret_key`` where the backend can); otherwise it is signed in one piece.
    ``tensors`` must be canonical (:func:`~pqc_fl.envelope.canonical_tensors`).
    """
    if envelope.mode == "mu":
        pk = public_key if public_key is not None else scheme.public_key_of(secret_key)
        h = scheme.mu_hasher(pk, CONTEXT)
        for chunk in signed_message(envelope, tensors):
            h.update(chunk)
        return scheme.sign_mu(secret_key, h.finalize())
    return scheme.sign(secret_key, b"".join(signed_message(envelope, tensors)), CONTEXT)


def sign_update(
    state_dict: Mapping[str, Any],
    *,
    scheme: str | SignatureScheme,
    secret_key: bytes,
    key_id: str,
    client_id: str,
    run_id: str,
    round: int,
    num_examples: int,
    metrics: Mapping[str, float] | None = None,
    mode: Mode = "digest",
    nonce: bytes | None = None,
    public_key: bytes | None = None,
    node: str = "",
    hash: Hash = "sha256",
) -> SignedUpdate:
    """Sign a model update (a state dict of torch tensors or numpy arrays).

    Args:
        state_dict: tensor name -> tensor; copied to host memory only if it is not already there.
        scheme: a scheme name or object; ``secret_key`` must belong to it.
        secret_key, key_id: the client's key and its registered id.
        client_id, run_id, round: what the update is for; the verifier checks all three.
        num_examples: local training examples (FedAvg weight, >= 1); signed, so it cannot be
            inflated.
        metrics: training metrics reported with the update (signed exactly; a server refuses
            non-finite ones and those beyond its policy's ``max_abs_metric``).
        mode: ``"digest"`` (default), ``"full"`` or ``"mu"`` (ML-DSA ExternalMu); see
            :mod:`pqc_fl.envelope`.
        nonce: 16 bytes; random by default. Fixed nonces make signing deterministic input-wise.
        public_key: only used by ``"mu"`` on backends that cannot derive it from the secret key.
        node: the transport node that will deliver the update (on Flower: ``context.node_id``);
            a server that knows the sender rejects the update from any other node.
        hash: the digest's hash in mode ``"digest"``: ``"sha256"`` (default) or ``"blake3"``.

    Returns:
        The :class:`~pqc_fl.wire.SignedUpdate` (serialise with ``to_bytes()``).
    """
    s = scheme if isinstance(scheme, SignatureScheme) else get_scheme(scheme)
    _check_arguments(s, round, num_examples, mode, hash)
    nonce = secrets.token_bytes(16) if nonce is None else nonce
    if not isinstance(nonce, bytes) or len(nonce) != 16:
        raise QHybridError(f"nonce={nonce!r:.40} must be 16 bytes (or None: random)")
    tensors = canonical_tensors(state_dict)
    t0 = time.perf_counter()
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
        metrics=metrics_tuple(metrics),
        node=node,
        hash=hash,
    )
    try:
        env = Envelope.from_bytes(env.to_bytes())  # enforce the same limits a verifier applies
    except MalformedUpdateError as err:
        raise QHybridError(f"cannot sign this update: {err}") from None
    t2 = time.perf_counter()
    sig = sign_envelope(s, secret_key, env, tensors, public_key=public_key)
    timings = {"digest": t1 - t0, "sign": time.perf_counter() - t2}
    return SignedUpdate(env, sig, tensors, timings)


def _check_arguments(
    s: SignatureScheme, round: Any, num_examples: Any, mode: Any, hash: Any
) -> None:
    """The arguments of :func:`sign_update` a verifier would refuse, refused before any work."""
    if mode not in MODES:
        raise QHybridError(f"mode={mode!r} is not one of {MODES}")
    if mode == "mu" and not s.supports_mu:
        raise QHybridError(
            f"mode='mu' needs ML-DSA ExternalMu, which {s.name} ({s.backend}) lacks; use an "
            "ml-dsa-* scheme on the 'cryptography' backend or mode='digest'"
        )
    if hash not in HASHES:
        raise QHybridError(f"hash={hash!r} is not one of {HASHES}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise QHybridError(f"round={round!r} must be an int >= 0")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise QHybridError(
            f"num_examples={num_examples!r} must be an int >= 1 (the local examples the update "
            "was trained on; a server refuses 0 as no_examples)"
        )
