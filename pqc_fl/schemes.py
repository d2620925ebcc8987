"""Signature schemes behind one small interface: post-quantum (ML-DSA, SLH-DSA, FN-DSA/Falcon) and classical.

Every scheme is a :class:`SignatureScheme` with ``keygen() -> (sk, pk)``, ``sign(sk, msg, ctx)`` and
``verify(pk, msg, sig, ctx) -> bool``. Keys and signatures are plain ``bytes`` in the standard
encodings, so any other conforming library can use them:

======================  ==============================  ======================================
scheme                  public key / signature          secret key
======================  ==============================  ======================================
ML-DSA-44/65/87         FIPS 204 ``pkEncode`` / sig     ``cryptography``: the 32-byte seed xi
                                                        (FIPS 204 KeyGen_internal input);
                                                        pqcrypto / liboqs: ``skEncode``
SLH-DSA-*               FIPS 205 raw                    FIPS 205 raw (4n bytes)
Falcon-512/1024         FN-DSA raw (897/1793 B),        c-fn-dsa encoding (1345/2369 B)
                        padded signatures (666/1280 B)
Ed25519                 RFC 8032 raw 32 B / 64 B        raw 32-byte seed
Ed25519+ML-DSA-44       the two concatenated (Ed25519   the two concatenated (64 B)
                        first): 1,344 B / 2,484 B
ECDSA P-256 SHA-256     SEC1 compressed point (33 B) /  32-byte big-endian scalar
                        IEEE P1363 ``r || s`` (64 B)
RSA-3072-PSS SHA-256    PKCS#1 ``RSAPublicKey`` DER /   PKCS#8 DER
                        384 B (salt = 32 B, MGF1-SHA256)
======================  ==============================  ======================================

Context strings (domain separation): ML-DSA (FIPS 204), SLH-DSA (FIPS 205) and FN-DSA take ``ctx``
natively (at most 255 bytes, pure mode). The classical schemes have no context parameter, so they
sign the same framing FIPS 204 uses internally, ``M' = 0x00 || len(ctx) || ctx || M``, always (also
for an empty ``ctx``) so that no two (ctx, msg) pairs collide; a third-party verifier rebuilds
``M'`` the same way.

Backends:
  * ``cryptography`` (OpenSSL 3.5+ inside its wheel): ML-DSA and the classical baselines; also
    FIPS 204 ExternalMu (``mu_hasher`` + ``sign_mu``/``verify_mu``), which streams a message of any
    size into the 64-byte message representative mu.
  * ``pqcrypto`` 1.0 (PQClean/RustCrypto via PyO3): SLH-DSA, and ML-DSA as a second, slower
    backend used for the interop test.
  * ``py-fn-dsa`` (the ``falcon`` extra): Pornin's c-fn-dsa, FN-DSA "provisional" (FIPS 206 is
    still a draft).
  * liboqs (ML-DSA and SLH-DSA; its Falcon is round-3 Falcon, not FN-DSA), only when its shared
    library is already on the system: found with :func:`ctypes.util.find_library` or
    ``$OQS_INSTALL_PATH`` and called through ``ctypes``.
    ``import oqs`` is never used: liboqs-python tries to download and build liboqs on import and
    exits the process when it cannot.

Example:
    >>> s = get_scheme("ml-dsa-44")
    >>> sk, pk = s.keygen()
    >>> sig = s.sign(sk, b"update digest", ctx=b"qhybrid-fl/v1")
    >>> s.verify(pk, b"update digest", sig, ctx=b"qhybrid-fl/v1"), len(sig)
    (True, 2420)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qhybrid.errors import QHybridError

__all__ = [
    "MuHasher",
    "SchemeError",
    "SignatureScheme",
    "CLASSICAL_SCHEMES",
    "POST_QUANTUM_SCHEMES",
    "SCHEME_NAMES",
    "available_schemes",
    "canonical_name",
    "find_liboqs",
    "get_scheme",
    "scheme_backends",
]

MAX_CONTEXT = 255  # FIPS 204/205: ctx is at most 255 bytes


class SchemeError(QHybridError):
    """An unknown or unavailable scheme, or a key of the wrong size."""


class MuHasher(Protocol):
    """A streaming FIPS 204 ExternalMu hasher: ``update`` message chunks, then ``finalize`` -> mu."""

    def update(self, data: Any) -> None:
        """Absorb the next chunk of the message."""

    def finalize(self) -> bytes:
        """The 64-byte message representative mu."""


@dataclass(frozen=True)
class SignatureScheme:
    """One signature scheme on one backend; stateless apart from the backend's functions.

    Attributes:
        name: canonical lower-case name, e.g. ``"ml-dsa-44"``.
        family: ``"ml-dsa"``, ``"slh-dsa"``, ``"fn-dsa"``, ``"ed25519"``, ``"ecdsa"``, ``"rsa-pss"``
            or ``"composite"``.
        nist_level: claimed NIST security category (1, 3 or 5); classical schemes give their
            classical-security analogue and ``post_quantum=False``.
        backend: the library doing the work.
        public_key_size / secret_key_size / signature_size: bytes (signature_size is exact:
            every scheme here has fixed-size signatures in the chosen encoding; secret_key_size
            is 0 where it varies, as for RSA PKCS#8).
    """

    name: str
    family: str
    nist_level: int
    post_quantum: bool
    backend: str
    public_key_size: int
    secret_key_size: int
    signature_size: int
    _keygen: Callable[[], tuple[bytes, bytes]] = field(repr=False, compare=False)
    _sign: Callable[[bytes, bytes, bytes], bytes] = field(repr=False, compare=False)
    _verify: Callable[[bytes, bytes, bytes, bytes], bool] = field(repr=False, compare=False)
    _mu_hasher: Callable[[bytes, bytes], MuHasher] | None = field(
        default=None, repr=False, compare=False
    )
    _sign_mu: Callable[[bytes, bytes], bytes] | None = field(
        default=None, repr=False, compare=False
    )
    _verify_mu: Callable[[bytes, bytes, bytes], bool] | None = field(
        default=None, repr=False, compare=False
    )
    _public_of: Callable[[bytes], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def supports_mu(self) -> bool:
        """Whether FIPS 204 ExternalMu (streamed message representative) is available."""
        return self._mu_hasher is not None

    def keygen(self) -> tuple[bytes, bytes]:
        """A fresh key pair ``(secret_key, public_key)`` from the OS random generator."""
        return self._keygen()

    def sign(self, secret_key: bytes, message: bytes, ctx: bytes = b"") -> bytes:
        """Sign ``message`` under context ``ctx`` (at most 255 bytes)."""
        _check_ctx(ctx)
        if self.secret_key_size and len(secret_key) != self.secret_key_size:
            raise SchemeError(
                f"{self.name} ({self.backend}) secret key has {len(secret_key)} bytes, expected "
                f"{self.secret_key_size}; was it made by another scheme or backend?"
            )
        return self._sign(bytes(secret_key), bytes(message), bytes(ctx))

    def verify(self, public_key: bytes, message: bytes, signature: bytes, ctx: bytes = b"") -> bool:
        """True iff ``signature`` is valid for ``message`` and ``ctx`` under ``public_key``.

        A signature of the wrong length or garbled bytes gives ``False``, never an exception; a
        public key of the wrong length raises :class:`SchemeError` (a configuration error).
        """
        _check_ctx(ctx)
        self._check_pk(public_key)
        if len(signature) != self.signature_size:
            return False
        try:
            return bool(self._verify(bytes(public_key), bytes(message), bytes(signature), ctx))
        except Exception:  # noqa: BLE001 - any library complaint about the bytes means "invalid"
            return False

    def mu_hasher(self, public_key: bytes, ctx: bytes = b"") -> MuHasher:
        """A streaming hasher for mu = SHAKE256(tr || 0x00 || len(ctx) || ctx || M, 64) (FIPS 204)."""
        if self._mu_hasher is None:
            raise SchemeError(
                f"{self.name} ({self.backend}) has no ExternalMu; use an ML-DSA scheme on the "
                "'cryptography' backend (>= 50)"
            )
        _check_ctx(ctx)
        self._check_pk(public_key)
        return self._mu_hasher(bytes(public_key), bytes(ctx))

    def sign_mu(self, secret_key: bytes, mu: bytes) -> bytes:
        """Sign a 64-byte mu; the result verifies as an ordinary signature of the streamed message."""
        if self._sign_mu is None:
            raise SchemeError(f"{self.name} ({self.backend}) has no ExternalMu signing")
        return self._sign_mu(bytes(secret_key), bytes(mu))

    def verify_mu(self, public_key: bytes, mu: bytes, signature: bytes) -> bool:
        """Verify a signature against a precomputed 64-byte mu."""
        if self._verify_mu is None:
            raise SchemeError(f"{self.name} ({self.backend}) has no ExternalMu verification")
        self._check_pk(public_key)
        if len(signature) != self.signature_size:
            return False
        try:
            return bool(self._verify_mu(bytes(public_key), bytes(mu), bytes(signature)))
        except Exception:  # noqa: BLE001
            return False

    def public_key_of(self, secret_key: bytes) -> bytes:
        """The public key belonging to ``secret_key`` (ML-DSA seeds on ``cryptography`` only)."""
        if self._public_of is None:
            raise SchemeError(f"{self.name} ({self.backend}) cannot derive a public key; pass it")
        return self._public_of(bytes(secret_key))

    def _check_pk(self, public_key: bytes) -> None:
        if len(public_key) != self.public_key_size:
            raise SchemeError(
                f"{self.name} public key has {len(public_key)} bytes, expected "
                f"{self.public_key_size}"
            )


def _check_ctx(ctx: bytes) -> None:
    if len(ctx) > MAX_CONTEXT:
        raise SchemeError(f"context string has {len(ctx)} bytes; FIPS 204/205 allow at most 255")


def _framed(message: bytes, ctx: bytes) -> bytes:
    """FIPS 204 pure-mode framing M' = 0x00 || len(ctx) || ctx || M, for schemes without a ctx."""
    return b"\x00" + bytes([len(ctx)]) + ctx + message


# Parsed key objects, cached per scheme by their bytes: parsing costs (ML-DSA seed expansion, RSA
# prime checks, ECDSA point multiplication) belong to key loading, not to every signature.
_KEY_CACHE = functools.lru_cache(maxsize=1024)


# --------------------------------------------------------------------------------------------
# cryptography: ML-DSA and the classical baselines
# --------------------------------------------------------------------------------------------

_MLDSA = {  # name -> (level, pk, sig) from FIPS 204 Table 2
    "ml-dsa-44": (2, 1312, 2420),
    "ml-dsa-65": (3, 1952, 3309),
    "ml-dsa-87": (5, 2592, 4627),
}


def _crypto_mldsa(name: str) -> SignatureScheme:
    from cryptography.hazmat.primitives.asymmetric import mldsa

    level, pk_size, sig_size = _MLDSA[name]
    suffix = name.rsplit("-", 1)[1]
    load_sk = _KEY_CACHE(getattr(mldsa, f"MLDSA{suffix}PrivateKey").from_seed_bytes)
    load_pk = _KEY_CACHE(getattr(mldsa, f"MLDSA{suffix}PublicKey").from_public_bytes)
    generate = getattr(mldsa, f"MLDSA{suffix}PrivateKey").generate

    def keygen() -> tuple[bytes, bytes]:
        k = generate()
        return k.private_bytes_raw(), k.public_key().public_bytes_raw()

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        return bytes(load_sk(sk).sign(msg, ctx))

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        load_pk(pk).verify(sig, msg, ctx)
        return True

    def mu_hasher(pk: bytes, ctx: bytes) -> MuHasher:
        return mldsa.MLDSAMuHasher(load_pk(pk), ctx)  # type: ignore[no-any-return]

    def sign_mu(sk: bytes, mu: bytes) -> bytes:
        return bytes(load_sk(sk).sign_mu(mu))

    def verify_mu(pk: bytes, mu: bytes, sig: bytes) -> bool:
        load_pk(pk).verify_mu(sig, mu)
        return True

    def public_of(sk: bytes) -> bytes:
        return bytes(load_sk(sk).public_key().public_bytes_raw())

    return SignatureScheme(
        name,
        "ml-dsa",
        level,
        True,
        "cryptography",
        pk_size,
        32,
        sig_size,
        keygen,
        sign,
        verify,
        mu_hasher,
        sign_mu,
        verify_mu,
        public_of,
    )


def _crypto_ed25519() -> SignatureScheme:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    def keygen() -> tuple[bytes, bytes]:
        k = ed25519.Ed25519PrivateKey.generate()
        return k.private_bytes_raw(), k.public_key().public_bytes_raw()

    load_sk = _KEY_CACHE(ed25519.Ed25519PrivateKey.from_private_bytes)
    load_pk = _KEY_CACHE(ed25519.Ed25519PublicKey.from_public_bytes)

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        return load_sk(sk).sign(_framed(msg, ctx))

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        load_pk(pk).verify(sig, _framed(msg, ctx))
        return True

    return SignatureScheme(
        "ed25519", "ed25519", 1, False, "cryptography", 32, 32, 64, keygen, sign, verify
    )


def _crypto_ecdsa_p256() -> SignatureScheme:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )

    curve = ec.SECP256R1()

    def keygen() -> tuple[bytes, bytes]:
        k = ec.generate_private_key(curve)
        sk = k.private_numbers().private_value.to_bytes(32, "big")
        pk = k.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return sk, pk

    load_sk = _KEY_CACHE(lambda sk: ec.derive_private_key(int.from_bytes(sk, "big"), curve))
    load_pk = _KEY_CACHE(lambda pk: ec.EllipticCurvePublicKey.from_encoded_point(curve, pk))

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        r, s = decode_dss_signature(load_sk(sk).sign(_framed(msg, ctx), ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        key = load_pk(pk)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, _framed(msg, ctx), ec.ECDSA(hashes.SHA256()))
        return True

    return SignatureScheme(
        "ecdsa-p256", "ecdsa", 1, False, "cryptography", 33, 32, 64, keygen, sign, verify
    )


def _crypto_rsa3072() -> SignatureScheme:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    pk_size = 398  # DER RSAPublicKey of a 3072-bit modulus with e = 65537

    def keygen() -> tuple[bytes, bytes]:
        k = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        sk = k.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pk = k.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        return sk, pk

    # loading an RSA private key validates its primes (~0.3 s): parse each key once
    load_sk = _KEY_CACHE(lambda sk: serialization.load_der_private_key(sk, password=None))
    load_pk = _KEY_CACHE(lambda pk: serialization.load_der_public_key(_pkcs1_to_spki(pk)))

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        k = load_sk(sk)
        if not isinstance(k, rsa.RSAPrivateKey):
            raise SchemeError("rsa-3072 secret key is not an RSA key")
        return k.sign(_framed(msg, ctx), pss, hashes.SHA256())

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        k = load_pk(pk)
        if not isinstance(k, rsa.RSAPublicKey) or k.key_size != 3072:
            return False
        k.verify(sig, _framed(msg, ctx), pss, hashes.SHA256())
        return True

    # secret_key_size 0: PKCS#8 DER length varies by a byte or two between keys
    return SignatureScheme(
        "rsa-3072", "rsa-pss", 1, False, "cryptography", pk_size, 0, 384, keygen, sign, verify
    )


def _pkcs1_to_spki(pk: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey DER in a SubjectPublicKeyInfo (rsaEncryption, NULL params)."""
    alg = bytes.fromhex("300d06092a864886f70d0101010500")
    bitstring = b"\x03" + _der_len(len(pk) + 1) + b"\x00" + pk
    body = alg + bitstring
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


# --------------------------------------------------------------------------------------------
# pqcrypto 1.0: SLH-DSA (and ML-DSA as a second backend)
# --------------------------------------------------------------------------------------------

_SLH = {  # name -> NIST level (FIPS 205 Table 2); sizes come from the module constants
    "slh-dsa-sha2-128f": 1, "slh-dsa-sha2-128s": 1, "slh-dsa-sha2-192f": 3, "slh-dsa-sha2-256f": 5,
    "slh-dsa-shake-128f": 1, "slh-dsa-shake-128s": 1, "slh-dsa-shake-192f": 3,
    "slh-dsa-shake-256f": 5,
}  # fmt: skip


_PQCRYPTO_MLDSA_MAX_MESSAGE = 1 << 20  # bytes (measured: 1,048,576 signs, one more byte fails)


def _pqcrypto(name: str) -> SignatureScheme:
    mod = importlib.import_module("pqcrypto.sign." + name.replace("-", "_"))

    def keygen() -> tuple[bytes, bytes]:
        pk, sk = mod.keygen()
        return bytes(sk), bytes(pk)

    # pqcrypto 1.0 refuses ML-DSA messages over 1 MiB ("invalid message length"); SLH-DSA has no
    # such limit. Say so instead of failing deep inside the extension.
    limit = _PQCRYPTO_MLDSA_MAX_MESSAGE if name in _MLDSA else None

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        if limit is not None and len(msg) > limit:
            raise SchemeError(
                f"pqcrypto 1.0 signs {name} messages of at most {limit} bytes, got {len(msg)}; "
                "use the 'cryptography' backend, or mode='digest'"
            )
        return bytes(mod.sign(sk, msg, context=ctx or None))

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        mod.verify(pk, msg, sig, context=ctx or None)  # raises InvalidSignatureError
        return True

    family, level = ("ml-dsa", _MLDSA[name][0]) if name in _MLDSA else ("slh-dsa", _SLH[name])
    return SignatureScheme(
        name,
        family,
        level,
        True,
        "pqcrypto",
        mod.PUBLIC_KEY_SIZE,
        mod.SECRET_KEY_SIZE,
        mod.SIGNATURE_SIZE,
        keygen,
        sign,
        verify,
    )


# --------------------------------------------------------------------------------------------
# py-fn-dsa (falcon extra): FN-DSA / Falcon
# --------------------------------------------------------------------------------------------

_FALCON = {"falcon-512": (9, 1, 897, 1345, 666), "falcon-1024": (10, 5, 1793, 2369, 1280)}


def _fn_dsa(name: str) -> SignatureScheme:
    try:
        fn = importlib.import_module("py_fn_dsa")
    except ImportError as err:
        raise SchemeError(
            f"{name} needs the 'falcon' extra: pip install 'qhybrid[falcon]' (py-fn-dsa==0.2.0)"
        ) from err
    logn, level, pk_size, sk_size, sig_size = _FALCON[name]

    def keygen() -> tuple[bytes, bytes]:
        vk, sk = fn.keygen(logn)
        return bytes(sk.key_data), bytes(vk.key_data)

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        return bytes(fn.sign(fn.SigningKey(logn, sk), msg, ctx))

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        return bool(fn.verify(fn.VerifyKey(logn, pk), sig, msg, ctx))

    return SignatureScheme(
        name, "fn-dsa", level, True, "py-fn-dsa", pk_size, sk_size, sig_size, keygen, sign, verify
    )


# --------------------------------------------------------------------------------------------
# liboqs through ctypes, only when the shared library is already installed
# --------------------------------------------------------------------------------------------

# name -> (liboqs algorithm name, level, pk, sk, sig, takes a context string). liboqs' Falcon is
# round-3 Falcon, not FN-DSA (different message hashing), so it is not offered as a Falcon backend.
_OQS = {
    "ml-dsa-44": ("ML-DSA-44", 2, 1312, 2560, 2420, True),
    "ml-dsa-65": ("ML-DSA-65", 3, 1952, 4032, 3309, True),
    "ml-dsa-87": ("ML-DSA-87", 5, 2592, 4896, 4627, True),
    "slh-dsa-sha2-128f": ("SLH_DSA_PURE_SHA2_128F", 1, 32, 64, 17088, True),
    "slh-dsa-sha2-128s": ("SLH_DSA_PURE_SHA2_128S", 1, 32, 64, 7856, True),
    "slh-dsa-shake-128f": ("SLH_DSA_PURE_SHAKE_128F", 1, 32, 64, 17088, True),
    "slh-dsa-shake-128s": ("SLH_DSA_PURE_SHAKE_128S", 1, 32, 64, 7856, True),
}


def find_liboqs() -> str | None:
    """Path or soname of an installed liboqs shared library, or None. Never imports ``oqs``."""
    candidates = []
    if root := os.environ.get("OQS_INSTALL_PATH"):
        for sub in ("lib", "lib64"):
            candidates += sorted(Path(root, sub).glob("liboqs.so*"))
            candidates += sorted(Path(root, sub).glob("liboqs*.dylib"))
    for p in candidates:
        if p.is_file():
            return str(p)
    return ctypes.util.find_library("oqs")


@functools.cache
def _liboqs() -> ctypes.CDLL | None:
    path = find_liboqs()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.OQS_SIG_new.restype = ctypes.c_void_p
    lib.OQS_SIG_new.argtypes = [ctypes.c_char_p]
    lib.OQS_SIG_free.argtypes = [ctypes.c_void_p]
    lib.OQS_SIG_alg_is_enabled.argtypes = [ctypes.c_char_p]
    lib.OQS_SIG_alg_is_enabled.restype = ctypes.c_int
    lib.OQS_SIG_keypair.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.OQS_SIG_keypair.restype = ctypes.c_int
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.OQS_SIG_sign_with_ctx_str.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        size_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
    ]
    lib.OQS_SIG_sign_with_ctx_str.restype = ctypes.c_int
    lib.OQS_SIG_verify_with_ctx_str.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
    ]
    lib.OQS_SIG_verify_with_ctx_str.restype = ctypes.c_int
    if hasattr(lib, "OQS_init"):
        lib.OQS_init()
    return lib


def _liboqs_enabled(name: str) -> bool:
    lib = _liboqs()
    return (
        lib is not None
        and name in _OQS
        and bool(lib.OQS_SIG_alg_is_enabled(_OQS[name][0].encode()))
    )


def _liboqs_scheme(name: str) -> SignatureScheme:
    lib = _liboqs()
    if lib is None or not _liboqs_enabled(name):
        raise SchemeError(f"{name} is not enabled in the installed liboqs (or liboqs is absent)")
    alg, level, pk_size, sk_size, sig_size, has_ctx = _OQS[name]
    handle = lib.OQS_SIG_new(alg.encode())
    if not handle:
        raise SchemeError(f"liboqs OQS_SIG_new({alg!r}) failed")
    ok = 0  # OQS_SUCCESS

    def keygen() -> tuple[bytes, bytes]:
        pk, sk = ctypes.create_string_buffer(pk_size), ctypes.create_string_buffer(sk_size)
        if lib.OQS_SIG_keypair(handle, pk, sk) != ok:
            raise SchemeError(f"liboqs keypair failed for {alg}")
        return sk.raw, pk.raw

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        if ctx and not has_ctx:
            raise SchemeError(f"liboqs {alg} takes no context string")
        sig, n = ctypes.create_string_buffer(sig_size), ctypes.c_size_t(sig_size)
        rc = lib.OQS_SIG_sign_with_ctx_str(
            handle, sig, ctypes.byref(n), msg, len(msg), ctx or None, len(ctx), sk
        )
        if rc != ok:
            raise SchemeError(f"liboqs signing failed for {alg}")
        return sig.raw[: n.value]

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        if ctx and not has_ctx:
            return False
        rc = lib.OQS_SIG_verify_with_ctx_str(
            handle, msg, len(msg), sig, len(sig), ctx or None, len(ctx), pk
        )
        return bool(rc == ok)

    family = "ml-dsa" if name in _MLDSA else "slh-dsa"
    return SignatureScheme(
        name, family, level, True, "liboqs", pk_size, sk_size, sig_size, keygen, sign, verify
    )


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

# name -> backends in order of preference (the first available one is the default)
_BACKENDS: dict[str, tuple[str, ...]] = {
    **{n: ("cryptography", "liboqs", "pqcrypto") for n in _MLDSA},
    **{n: ("pqcrypto", "liboqs") for n in _SLH},
    **{n: ("py-fn-dsa",) for n in _FALCON},
    "ed25519": ("cryptography",),
    "ecdsa-p256": ("cryptography",),
    "rsa-3072": ("cryptography",),
    "ed25519+ml-dsa-44": ("cryptography",),  # composite: valid only if both components verify
}
# composite (hybrid) schemes: name -> (classical component, post-quantum component)
_COMPOSITE = {"ed25519+ml-dsa-44": ("ed25519", "ml-dsa-44")}

CLASSICAL_SCHEMES = frozenset({"ed25519", "ecdsa-p256", "rsa-3072"})
SCHEME_NAMES = frozenset(_BACKENDS)  # every scheme name this module knows, installed or not
POST_QUANTUM_SCHEMES = SCHEME_NAMES - CLASSICAL_SCHEMES

_MODULE = {"cryptography": "cryptography", "pqcrypto": "pqcrypto", "py-fn-dsa": "py_fn_dsa"}


def _backend_present(backend: str) -> bool:
    if backend == "liboqs":
        return _liboqs() is not None
    return importlib.util.find_spec(_MODULE[backend]) is not None


def _composite(name: str) -> SignatureScheme:
    """A hybrid of a classical and a post-quantum scheme: keys, and signatures, are the two
    components concatenated (classical first); a signature is valid only if **both** verify.

    Both components sign ``M* = "qhybrid-composite/v1/" || name || 0x00 || M`` under the caller's
    context, so neither half is a valid stand-alone signature of ``M`` (no stripping to the weaker
    scheme) and the pair is bound to this composite. It stays secure while either component is
    (EUF-CMA of the composite reduces to either component's). This is our construction in the
    spirit of the IETF LAMPS composite signatures draft, not an implementation of that draft.
    """
    a, b = (get_scheme(n) for n in _COMPOSITE[name])
    label = b"qhybrid-composite/v1/" + name.encode("ascii") + b"\x00"
    ska, pka, sga = a.secret_key_size, a.public_key_size, a.signature_size

    def keygen() -> tuple[bytes, bytes]:
        (sk1, pk1), (sk2, pk2) = a.keygen(), b.keygen()
        return sk1 + sk2, pk1 + pk2

    def sign(sk: bytes, msg: bytes, ctx: bytes) -> bytes:
        return a.sign(sk[:ska], label + msg, ctx) + b.sign(sk[ska:], label + msg, ctx)

    def verify(pk: bytes, msg: bytes, sig: bytes, ctx: bytes) -> bool:
        ok_a = a.verify(pk[:pka], label + msg, sig[:sga], ctx)
        ok_b = b.verify(pk[pka:], label + msg, sig[sga:], ctx)
        return ok_a and ok_b

    return SignatureScheme(
        name,
        "composite",
        b.nist_level,
        True,
        "cryptography",
        pka + b.public_key_size,
        ska + b.secret_key_size,
        sga + b.signature_size,
        keygen,
        sign,
        verify,
    )


def _build(name: str, backend: str) -> SignatureScheme:
    if name in _COMPOSITE:
        return _composite(name)
    if backend == "liboqs":
        return _liboqs_scheme(name)
    if backend == "py-fn-dsa":
        return _fn_dsa(name)
    if backend == "pqcrypto":
        return _pqcrypto(name)
    if name in _MLDSA:
        return _crypto_mldsa(name)
    return {
        "ed25519": _crypto_ed25519,
        "ecdsa-p256": _crypto_ecdsa_p256,
        "rsa-3072": _crypto_rsa3072,
    }[name]()


def scheme_backends(name: str) -> list[str]:
    """The installed backends that implement ``name``, the default first."""
    name = _canonical(name)
    out = []
    for b in _BACKENDS[name]:
        if b == "liboqs":
            if _liboqs_enabled(name):
                out.append(b)
        elif _backend_present(b):
            out.append(b)
    return out


def available_schemes() -> list[str]:
    """Names of the schemes usable here (those with at least one installed backend)."""
    return [n for n in _BACKENDS if scheme_backends(n)]


def get_scheme(name: str, backend: str | None = None) -> SignatureScheme:
    """The scheme ``name`` (e.g. ``"ml-dsa-44"``) on ``backend`` (default: the fastest installed).

    Raises:
        SchemeError: a name that is not a string or not a known scheme, or no installed backend;
            the message says what to install.
    """
    if backend is not None and not isinstance(backend, str):
        raise SchemeError(f"backend={backend!r} must be a string such as 'cryptography' or None")
    return _get_scheme(_canonical(name), backend)


@functools.cache
def _get_scheme(name: str, backend: str | None) -> SignatureScheme:
    have = scheme_backends(name)
    if backend is None:
        if not have:
            hint = (
                "pip install 'qhybrid[falcon]'" if name in _FALCON else "pip install 'qhybrid[fl]'"
            )
            raise SchemeError(f"no backend for {name} is installed; {hint}")
        backend = have[0]
    elif backend not in _BACKENDS[name]:
        raise SchemeError(
            f"backend {backend!r} does not implement {name}; choose one of {list(_BACKENDS[name])}"
        )
    elif backend not in have:
        raise SchemeError(f"backend {backend!r} for {name} is not installed here")
    return _build(name, backend)


_ALIASES = {"falcon512": "falcon-512", "falcon1024": "falcon-1024", "fn-dsa-512": "falcon-512",
            "fn-dsa-1024": "falcon-1024", "rsa-3072-pss": "rsa-3072", "ecdsa-p-256": "ecdsa-p256",
            "mldsa44": "ml-dsa-44", "mldsa65": "ml-dsa-65", "mldsa87": "ml-dsa-87"}  # fmt: skip


def canonical_name(name: str) -> str:
    """The canonical spelling of a scheme name or alias (``"FN-DSA-512"`` -> ``"falcon-512"``)."""
    return _canonical(name)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise SchemeError(f"scheme name {name!r:.60} must be a string, one of {sorted(_BACKENDS)}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _BACKENDS:
        raise SchemeError(f"unknown signature scheme {name!r:.60}; known: {sorted(_BACKENDS)}")
    return key
