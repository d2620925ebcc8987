"""Client keys: a registry of public keys (key ids, rotation with a grace window, revocation) and
owner-only secret-key files.

Key distribution is out of band, which closes the man-in-the-middle gap of signing without a PKI
(arXiv 2409.04637, Sec. 5): each client generates its key pair locally, keeps the secret key in a
``0600`` file, and an operator registers the public key with the server (for example by copying
the client's ``.pub.json``). The server only ever sees public keys.

Rotation: ``rotate(client_id=..., key_id=new, public_key=..., round=r, grace_rounds=g)`` makes the
new key the client's active key and retires the old one, which is still accepted for updates of
rounds ``< r + g`` (updates already in flight when the key changed). Revocation is immediate and
final. Both are recorded, never deleted, so an audit can tell "revoked" from "never registered".

Secret keys never appear in ``repr``, logs or reports: :class:`ClientKey` hides them and the
registry never holds them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pqc_fl.schemes import get_scheme
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_text

__all__ = [
    "ClientKey",
    "KeyRegistryError",
    "KeyRecord",
    "KeyRegistry",
    "generate_client_key",
    "key_fingerprint",
    "load_client_key",
    "provision_keys",
    "save_client_key",
]

logger = logging.getLogger(__name__)

KeyStatus = Literal["active", "retired", "revoked"]


class KeyRegistryError(QHybridError):
    """A key registry or key file problem the user can fix."""


def key_fingerprint(scheme: str, public_key: bytes) -> str:
    """The default key id: the first 16 bytes of SHA-256(scheme || 0x00 || public key), as hex."""
    return hashlib.sha256(scheme.encode() + b"\x00" + public_key).hexdigest()[:32]


@dataclass(frozen=True)
class ClientKey:
    """A client's key pair. ``secret_key`` is excluded from ``repr`` so it cannot leak into logs."""

    client_id: str
    key_id: str
    scheme: str
    public_key: bytes = field(repr=False)
    secret_key: bytes = field(repr=False)


def generate_client_key(client_id: str, scheme: str = "ml-dsa-44") -> ClientKey:
    """A fresh key pair for ``client_id``, with the fingerprint as its key id."""
    s = get_scheme(scheme)
    sk, pk = s.keygen()
    return ClientKey(client_id, key_fingerprint(s.name, pk), s.name, pk, sk)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise KeyRegistryError(f"{path}: field {what!r} is not valid base64") from err


def _write_private(path: Path, text: str) -> None:
    # The temporary file is created owner-only and keeps 0600 through the rename, so the secret is
    # never readable by others, not even for a moment.
    atomic_write_text(path, text, permissions=0o600)


def save_client_key(path: str | Path, key: ClientKey) -> Path:
    """Write the key pair to ``path`` (mode 0600, atomically) and the public part to ``*.pub.json``.

    Returns:
        The path of the public-key file, which is what an operator registers with the server.
    """
    path = Path(path)
    record = {"client_id": key.client_id, "key_id": key.key_id, "scheme": key.scheme}
    _write_private(
        path,
        json.dumps(
            {**record, "public_key": _b64(key.public_key), "secret_key": _b64(key.secret_key)},
            indent=2,
        )
        + "\n",
    )
    pub = path.with_name(path.name.removesuffix(".json") + ".pub.json")
    _write_private(pub, json.dumps({**record, "public_key": _b64(key.public_key)}, indent=2) + "\n")
    logger.info("wrote key %s of client %s to %s", key.key_id, key.client_id, path)
    return pub


def load_client_key(path: str | Path) -> ClientKey:
    """Read a key file written by :func:`save_client_key`; refuse one that others can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as err:
        raise KeyRegistryError(
            f"key file {path} does not exist; create it with `qhybrid fl keys`"
        ) from err
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRegistryError(
            f"key file {path} has mode {stat.S_IMODE(mode):o}; secret keys must be owner-only: "
            f"chmod 600 {path}"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return ClientKey(
            str(d["client_id"]), str(d["key_id"]), str(d["scheme"]),
            _unb64(d["public_key"], "public_key", path), _unb64(d["secret_key"], "secret_key", path),
        )  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise KeyRegistryError(f"key file {path} is not a qhybrid client key ({err!r})") from None


@dataclass(frozen=True)
class KeyRecord:
    """One registered public key and its life cycle."""

    key_id: str
    client_id: str
    scheme: str
    public_key: bytes = field(repr=False)
    status: KeyStatus = "active"
    registered_round: int = 0  # first round the key may sign
    accept_until_round: int | None = None  # retired keys: last round still accepted (grace)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id, "client_id": self.client_id, "scheme": self.scheme,
            "public_key": _b64(self.public_key), "status": self.status,
            "registered_round": self.registered_round,
            "accept_until_round": self.accept_until_round,
        }  # fmt: skip


class KeyRegistry:
    """The server's table of client public keys, keyed by key id.

    Example:
        >>> reg = KeyRegistry()
        >>> k = generate_client_key("client-0")
        >>> _ = reg.register(client_id="client-0", key_id=k.key_id, scheme=k.scheme,
        ...                  public_key=k.public_key)
        >>> reg.check(k.key_id, client_id="client-0", scheme="ml-dsa-44", round=1)[1]
        'ok'
    """

    def __init__(self) -> None:
        self._keys: dict[str, KeyRecord] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def records(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda r: (r.client_id, r.key_id))

    def active_key(self, client_id: str) -> KeyRecord | None:
        """The client's current signing key, if any."""
        for r in self._keys.values():
            if r.client_id == client_id and r.status == "active":
                return r
        return None

    def register(
        self, *, client_id: str, key_id: str, scheme: str, public_key: bytes, round: int = 0
    ) -> KeyRecord:
        """Add a client's first key. A client with an active key must :meth:`rotate` instead."""
        s = get_scheme(scheme)
        if len(public_key) != s.public_key_size:
            raise KeyRegistryError(
                f"public key for {client_id!r} has {len(public_key)} bytes, but {s.name} public "
                f"keys have {s.public_key_size}"
            )
        if key_id in self._keys:
            raise KeyRegistryError(
                f"key id {key_id!r} is already registered; key ids are never reused"
            )
        if (old := self.active_key(client_id)) is not None:
            raise KeyRegistryError(
                f"client {client_id!r} already has active key {old.key_id!r}; use rotate() to "
                "replace it"
            )
        rec = KeyRecord(key_id, client_id, s.name, bytes(public_key), "active", round)
        self._keys[key_id] = rec
        logger.info("registered key %s (%s) for client %s", key_id, s.name, client_id)
        return rec

    def register_client_key(self, key: ClientKey, *, round: int = 0) -> KeyRecord:
        """Register the public half of a :class:`ClientKey`."""
        return self.register(
            client_id=key.client_id, key_id=key.key_id, scheme=key.scheme,
            public_key=key.public_key, round=round,
        )  # fmt: skip

    def rotate(
        self,
        *,
        client_id: str,
        key_id: str,
        public_key: bytes,
        round: int,
        scheme: str | None = None,
        grace_rounds: int = 1,
    ) -> KeyRecord:
        """Make a new key active from ``round``; the old one stays valid for rounds < round + grace."""
        if grace_rounds < 0:
            raise KeyRegistryError(f"grace_rounds={grace_rounds} must be >= 0")
        old = self.active_key(client_id)
        if old is None:
            raise KeyRegistryError(
                f"client {client_id!r} has no active key to rotate; use register()"
            )
        self._keys[old.key_id] = replace(
            old, status="retired", accept_until_round=round + grace_rounds - 1
        )
        try:
            return self.register(
                client_id=client_id, key_id=key_id, scheme=scheme or old.scheme,
                public_key=public_key, round=round,
            )  # fmt: skip
        except QHybridError:
            self._keys[old.key_id] = old  # keep the registry consistent on a bad new key
            raise

    def revoke(self, key_id: str) -> KeyRecord:
        """Stop accepting ``key_id`` from now on."""
        rec = self._keys.get(key_id)
        if rec is None:
            raise KeyRegistryError(f"cannot revoke unknown key id {key_id!r}")
        rec = replace(rec, status="revoked")
        self._keys[key_id] = rec
        logger.info("revoked key %s of client %s", key_id, rec.client_id)
        return rec

    def check(
        self, key_id: str, *, client_id: str, scheme: str, round: int
    ) -> tuple[KeyRecord | None, str]:
        """Look a key up for an update; returns (record, reason code) with reason ``"ok"`` if usable.

        Reason codes: ``unknown_key``, ``revoked_key``, ``expired_key`` (retired and past its grace
        window, or used before its registration round), ``key_client_mismatch`` (the key belongs to
        another client), ``scheme_mismatch`` (the update names another scheme than the key's:
        a downgrade attempt).
        """
        rec = self._keys.get(key_id)
        if rec is None:
            return None, "unknown_key"
        if rec.status == "revoked":
            return rec, "revoked_key"
        if rec.client_id != client_id:
            return rec, "key_client_mismatch"
        if rec.scheme != scheme:
            return rec, "scheme_mismatch"
        if round < rec.registered_round:
            return rec, "expired_key"
        if rec.status == "retired" and (
            rec.accept_until_round is None or round > rec.accept_until_round
        ):
            return rec, "expired_key"
        return rec, "ok"

    # -- persistence -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"format": "qhybrid-fl-keys/v1", "keys": [r.to_json() for r in self.records()]}

    def save(self, path: str | Path) -> None:
        """Write the registry atomically (mode 0600)."""
        _write_private(Path(path), json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> KeyRegistry:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != "qhybrid-fl-keys/v1":
                raise KeyRegistryError(
                    f"{path} is not a qhybrid key registry (format {d.get('format')!r})"
                )
            reg = cls()
            for k in d["keys"]:
                rec = KeyRecord(
                    str(k["key_id"]), str(k["client_id"]), str(k["scheme"]),
                    _unb64(k["public_key"], "public_key", path), k["status"],
                    int(k["registered_round"]), k["accept_until_round"],
                )  # fmt: skip
                if rec.status not in ("active", "retired", "revoked"):
                    raise KeyRegistryError(
                        f"{path}: key {rec.key_id} has unknown status {rec.status!r}"
                    )
                reg._keys[rec.key_id] = rec
            return reg
        except FileNotFoundError as err:
            raise KeyRegistryError(f"key registry {path} does not exist") from err
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if isinstance(err, QHybridError):
                raise
            raise KeyRegistryError(f"{path} is not a valid key registry ({err!r})") from None

    def add_public_key_file(self, path: str | Path, *, round: int = 0) -> KeyRecord:
        """Register a client's ``*.pub.json`` (as written by :func:`save_client_key`)."""
        path = Path(path)
        d = json.loads(path.read_text(encoding="utf-8"))
        return self.register(
            client_id=str(d["client_id"]), key_id=str(d["key_id"]), scheme=str(d["scheme"]),
            public_key=_unb64(d["public_key"], "public_key", path), round=round,
        )  # fmt: skip


def provision_keys(key_dir: str | Path, num_clients: int, scheme: str = "ml-dsa-44") -> KeyRegistry:
    """Generate ``client-<i>.json`` key files (0600) for ``num_clients`` clients and ``registry.json``.

    This is the out-of-band step a deployment does once per client machine; here it writes all
    keys into one directory for simulations.
    """
    key_dir = Path(key_dir)
    reg = KeyRegistry()
    for i in range(num_clients):
        key = generate_client_key(f"client-{i}", scheme)
        save_client_key(key_dir / f"client-{i}.json", key)
        reg.register_client_key(key)
    reg.save(key_dir / "registry.json")
    return reg
