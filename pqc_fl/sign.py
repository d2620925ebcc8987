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
    MalformedUpdateError,
    canonical_tensors,
    metrics_tuple,
    signed_message,
    state_digest,
)
from pqc_fl.schemes import SignatureScheme, get_scheme
from pqc_fl.wire import SignedUpdate
from qhybrid.errors import QHybridError

__all__ = ["sign_update"]


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
        metrics=metrics_tuple(metrics),
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
