"""pqc_fl: federated learning on Flower with post-quantum signed model updates.

Clients sign each update with ML-DSA (FIPS 204), SLH-DSA (FIPS 205), Falcon/FN-DSA or a classical
baseline; the server verifies before aggregating and records every rejection with a stable reason.
See docs/pqc_fl.md. Importing this package does not import torch or flwr.
"""

from __future__ import annotations

from pqc_fl.envelope import CONTEXT, Envelope, MalformedUpdateError, state_digest
from pqc_fl.keys import (
    ClientKey,
    KeyRegistry,
    generate_client_key,
    load_client_key,
    save_client_key,
)
from pqc_fl.policy import ReplayGuard, ServerPolicy, schema_of
from pqc_fl.schemes import SchemeError, SignatureScheme, available_schemes, get_scheme
from pqc_fl.sign import sign_update
from pqc_fl.verify import Reason, Verdict, verify_update
from pqc_fl.wire import SignedUpdate

__all__ = [
    "CONTEXT",
    "ClientKey",
    "Envelope",
    "KeyRegistry",
    "MalformedUpdateError",
    "ReplayGuard",
    "ServerPolicy",
    "Reason",
    "SchemeError",
    "SignatureScheme",
    "SignedUpdate",
    "Verdict",
    "available_schemes",
    "generate_client_key",
    "get_scheme",
    "load_client_key",
    "save_client_key",
    "schema_of",
    "sign_update",
    "state_digest",
    "verify_update",
]
