"""Locally generated TLS certificates for Flower's deployment engine (SuperLink / SuperNodes).

:func:`make_local_certificates` writes a throw-away certificate authority and a server
certificate signed by it (ECDSA P-256, SHA-256, subjectAltName for the given host names and IP
addresses) with the ``cryptography`` package: what ``flower-superlink --ssl-ca-certfile
--ssl-certfile --ssl-keyfile`` and ``flower-supernode --root-certificates`` expect. Private keys
are written owner-only (0600). For a trial or a test on 127.0.0.1, not a replacement for a
managed PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from qhybrid.runs import atomic_write_text

__all__ = ["make_local_certificates"]


def make_local_certificates(
    folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 7
) -> dict[str, Path]:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``folder``; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("qhybrid local CA"))
        .issuer_name(name("qhybrid local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    server = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["ca"], ca.public_bytes(pem).decode())
    atomic_write_text(paths["cert"], server.public_bytes(pem).decode())
    key_pem = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_text(paths["key"], key_pem.decode(), permissions=0o600)
    return paths
