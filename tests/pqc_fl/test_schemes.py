"""Schemes: round trips, standard sizes, context strings, interop between backends, ExternalMu."""

from __future__ import annotations

import hashlib
import sys

import pytest

from pqc_fl.schemes import SchemeError, available_schemes, find_liboqs, get_scheme, scheme_backends

FAST = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "slh-dsa-sha2-128f", "falcon-512", "falcon-1024",
        "ed25519", "ecdsa-p256"]  # fmt: skip
SLOW = ["slh-dsa-sha2-128s", "slh-dsa-sha2-192f", "slh-dsa-sha2-256f", "slh-dsa-shake-128f",
        "slh-dsa-shake-128s", "slh-dsa-shake-192f", "slh-dsa-shake-256f", "rsa-3072"]  # fmt: skip

# FIPS 204 Table 2, FIPS 205 Table 2, Falcon spec, RFC 8032, SEC1/P1363, RSA-3072
SIZES = {  # name -> (public key, signature)
    "ml-dsa-44": (1312, 2420), "ml-dsa-65": (1952, 3309), "ml-dsa-87": (2592, 4627),
    "slh-dsa-sha2-128f": (32, 17088), "slh-dsa-sha2-128s": (32, 7856),
    "slh-dsa-sha2-192f": (48, 35664), "slh-dsa-sha2-256f": (64, 49856),
    "slh-dsa-shake-128f": (32, 17088), "slh-dsa-shake-128s": (32, 7856),
    "slh-dsa-shake-192f": (48, 35664), "slh-dsa-shake-256f": (64, 49856),
    "falcon-512": (897, 666), "falcon-1024": (1793, 1280),
    "ed25519": (32, 64), "ecdsa-p256": (33, 64), "rsa-3072": (398, 384),
}  # fmt: skip


def _roundtrip(name: str, backend: str | None = None) -> None:
    s = get_scheme(name, backend)
    sk, pk = s.keygen()
    assert (len(pk), s.signature_size) == SIZES[name]
    msg, ctx = hashlib.sha256(b"update").digest(), b"qhybrid-fl/v1/update"
    sig = s.sign(sk, msg, ctx)
    assert len(sig) == s.signature_size
    assert s.verify(pk, msg, sig, ctx)
    assert not s.verify(pk, msg, sig, b"qhybrid-fl/v1/other")  # wrong context
    assert not s.verify(pk, msg, sig)  # missing context
    assert not s.verify(pk, msg[:-1] + bytes([msg[-1] ^ 1]), sig, ctx)  # one flipped bit
    bad = bytearray(sig)
    bad[len(bad) // 2] ^= 0x10
    assert not s.verify(pk, msg, bytes(bad), ctx)  # garbled signature
    assert not s.verify(pk, msg, sig[:-1], ctx)  # truncated
    assert not s.verify(pk, msg, b"", ctx)  # empty
    _, other_pk = s.keygen()
    assert not s.verify(other_pk, msg, sig, ctx)  # another key


@pytest.mark.parametrize("name", FAST)
def test_roundtrip_and_rejections(name: str) -> None:
    _roundtrip(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_roundtrip_slow_schemes(name: str) -> None:
    _roundtrip(name)


def test_available_schemes_lists_the_design_names() -> None:
    names = available_schemes()
    for n in [
        "ml-dsa-44",
        "ml-dsa-65",
        "ml-dsa-87",
        "slh-dsa-sha2-128f",
        "slh-dsa-sha2-128s",
        "ed25519",
        "ecdsa-p256",
        "rsa-3072",
        "falcon-512",
        "falcon-1024",
    ]:
        assert n in names
    assert "oqs" not in sys.modules  # probing liboqs never imports liboqs-python


def test_unknown_scheme_and_backend_errors_name_the_fix() -> None:
    with pytest.raises(SchemeError, match="unknown signature scheme 'dilithium9'"):
        get_scheme("dilithium9")
    with pytest.raises(SchemeError, match="does not implement"):
        get_scheme("ed25519", "pqcrypto")
    with pytest.raises(SchemeError, match="at most 255"):
        get_scheme("ed25519").sign(get_scheme("ed25519").keygen()[0], b"m", b"x" * 256)
    s = get_scheme("ml-dsa-44")
    with pytest.raises(SchemeError, match="public key has 5 bytes"):
        s.verify(b"12345", b"m", b"s")


@pytest.mark.parametrize("name", ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"])
def test_mldsa_interop_cryptography_and_pqcrypto(name: str) -> None:
    a, b = get_scheme(name, "cryptography"), get_scheme(name, "pqcrypto")
    msg, ctx = b"a model update digest", b"qhybrid-fl/v1/update"
    sk_a, pk_a = a.keygen()
    sk_b, pk_b = b.keygen()
    assert b.verify(pk_a, msg, a.sign(sk_a, msg, ctx), ctx)  # OpenSSL -> PQClean
    assert a.verify(pk_b, msg, b.sign(sk_b, msg, ctx), ctx)  # PQClean -> OpenSSL
    assert not b.verify(pk_a, msg, a.sign(sk_a, msg, ctx), b"other")
    big = bytes((1 << 20) + 1)  # pqcrypto 1.0 refuses ML-DSA messages over 1 MiB: a clear error
    with pytest.raises(SchemeError, match="at most 1048576 bytes"):
        b.sign(sk_b, big, ctx)
    # nor can it verify them: it answers False (a valid signature!) rather than raising
    assert b.verify(pk_a, big, a.sign(sk_a, big, ctx), ctx) is False


@pytest.mark.skipif(find_liboqs() is None, reason="liboqs shared library not installed")
@pytest.mark.parametrize("name", ["ml-dsa-44", "ml-dsa-87", "slh-dsa-sha2-128f"])
def test_liboqs_interop(name: str) -> None:
    if "liboqs" not in scheme_backends(name):
        pytest.skip(f"{name} not enabled in this liboqs build")
    oqs, other = get_scheme(name, "liboqs"), get_scheme(name)
    ctx = b"qhybrid-fl/v1/update"
    sk, pk = other.keygen()
    assert oqs.verify(pk, b"m", other.sign(sk, b"m", ctx), ctx)
    sk, pk = oqs.keygen()
    assert other.verify(pk, b"m", oqs.sign(sk, b"m", ctx), ctx)


def test_external_mu_signature_is_an_ordinary_mldsa_signature() -> None:
    s = get_scheme("ml-dsa-65")
    sk, pk = s.keygen()
    chunks, ctx = [b"header", b"x" * 100_000, b"tail"], b"qhybrid-fl/v1/update"
    h = s.mu_hasher(pk, ctx)
    for c in chunks:
        h.update(c)
    mu = h.finalize()
    assert len(mu) == 64
    sig = s.sign_mu(sk, mu)
    whole = b"".join(chunks)
    assert s.verify(pk, whole, sig, ctx)  # pure verification of the concatenated message
    assert get_scheme("ml-dsa-65", "pqcrypto").verify(pk, whole, sig, ctx)  # and in PQClean
    assert s.verify_mu(pk, mu, sig)
    assert not s.verify(pk, whole + b"!", sig, ctx)
    assert not get_scheme("slh-dsa-sha2-128f").supports_mu


def test_classical_signatures_are_standard_over_the_framed_message() -> None:
    """A third party verifies Ed25519/ECDSA with plain `cryptography` on 0x00||len(ctx)||ctx||M."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    framed = b"\x00\x03ctxmsg"
    s = get_scheme("ed25519")
    sk, pk = s.keygen()
    ed25519.Ed25519PublicKey.from_public_bytes(pk).verify(s.sign(sk, b"msg", b"ctx"), framed)
    s = get_scheme("ecdsa-p256")
    sk, pk = s.keygen()
    sig = s.sign(sk, b"msg", b"ctx")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pk)
    key.verify(der, framed, ec.ECDSA(hashes.SHA256()))


def test_composite_is_valid_only_if_both_components_verify_and_cannot_be_stripped() -> None:
    c, ed, ml = (get_scheme(n) for n in ("ed25519+ml-dsa-44", "ed25519", "ml-dsa-44"))
    sk, pk = c.keygen()
    msg, ctx = b"an update envelope", b"qhybrid-fl/v1/update"
    sig = c.sign(sk, msg, ctx)
    assert (len(pk), len(sig)) == (32 + 1312, 64 + 2420) and c.verify(pk, msg, sig, ctx)
    assert not c.verify(pk, msg + b"!", sig, ctx) and not c.verify(pk, msg, sig, ctx + b"!")
    for cut in (10, 64 + 10):  # garble one byte of the Ed25519 half, then of the ML-DSA half
        bad = bytearray(sig)
        bad[cut] ^= 1
        assert not c.verify(pk, msg, bytes(bad), ctx)
    # each half is a real signature of the labelled message (checkable by the component alone) ...
    label = b"qhybrid-composite/v1/ed25519+ml-dsa-44\x00"
    assert ed.verify(pk[:32], label + msg, sig[:64], ctx)
    assert ml.verify(pk[32:], label + msg, sig[64:], ctx)
    # ... but not of the message itself: stripping to one scheme does not give a valid signature
    assert not ed.verify(pk[:32], msg, sig[:64], ctx) and not ml.verify(pk[32:], msg, sig[64:], ctx)
    # halves from two different messages do not combine
    other = c.sign(sk, b"another", ctx)
    assert not c.verify(pk, msg, sig[:64] + other[64:], ctx)
    # under the registered composite key, an attacker's own Ed25519 half with the victim's
    # ML-DSA half fails (security holds while either component is unbroken)
    sk2, _ = c.keygen()
    assert not c.verify(pk, msg, c.sign(sk2, msg, ctx)[:64] + sig[64:], ctx)
    assert not c.verify(pk, msg, sig[:64] + c.sign(sk2, msg, ctx)[64:], ctx)
