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
A rotation may not start before the client's last one, and revoking a client's active key also
revokes its predecessors that are still inside their grace window (otherwise revoking a stolen
key would leave the previous one, possibly stolen with it, valid).

Each key is registered with ``max_examples``, the size of the client's local data set: the
server refuses an update that claims more (FedAvg weights by the claim, so an unbounded claim
lets one client replace the global model).

The registry file is the server's trust anchor, so it is signed: :meth:`KeyRegistry.save` signs
the canonical JSON of its records with the server's own ML-DSA key (context
``qhybrid-fl/v1/registry``), and :meth:`KeyRegistry.load` verifies that signature with the
server's public key and then re-applies every check :meth:`KeyRegistry.register` makes (key
sizes, unique key ids, at most one active key per client, consistent life cycles).

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
from collections.abc import Sequence
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
    "generate_server_key",
    "key_fingerprint",
    "load_client_key",
    "load_server_registry",
    "provision_keys",
    "save_client_key",
]

logger = logging.getLogger(__name__)

KeyStatus = Literal["active", "retired", "revoked"]
REGISTRY_FORMAT = "qhybrid-fl-keys/v2"
_MAX_NODE = 256  # characters in a node id, as in the envelope
REGISTRY_CONTEXT = b"qhybrid-fl/v1/registry"  # FIPS 204 context of the registry signature
SERVER_ID = "server"  # client id of the server's own signing key


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


def generate_server_key(scheme: str = "ml-dsa-65") -> ClientKey:
    """The server's own key pair, which signs the key registry (ML-DSA-65 by default)."""
    return generate_client_key(SERVER_ID, scheme)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str, path: Path) -> bytes:
    if not isinstance(s, str):
        raise KeyRegistryError(f"{path}: field {what!r} must be a base64 string, got {s!r:.40}")
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise KeyRegistryError(f"{path}: field {what!r} is not valid base64") from err


def _read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path``; any failure (missing, a folder, not UTF-8, not JSON) is a
    :class:`KeyRegistryError` that names the file."""
    try:
        if path.exists() and not path.is_file():
            raise KeyRegistryError(f"{what} {path} is a folder or device, not a file")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyRegistryError(
            f"{what} {path} does not exist; create it with `qhybrid fl keys`"
        ) from None
    except OSError as err:
        raise KeyRegistryError(f"{what} {path} cannot be read: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KeyRegistryError(f"{what} {path} is not a JSON file ({err})") from None


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
    except OSError as err:
        raise KeyRegistryError(f"key file {path} cannot be read: {err.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRegistryError(
            f"key file {path} has mode {stat.S_IMODE(mode):o}; secret keys must be owner-only: "
            f"chmod 600 {path}"
        )
    d = _read_json(path, "key file")
    try:
        return ClientKey(
            str(d["client_id"]),
            str(d["key_id"]),
            str(d["scheme"]),
            _unb64(d["public_key"], "public_key", path),
            _unb64(d["secret_key"], "secret_key", path),
        )
    except (KeyError, TypeError) as err:
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
    max_examples: int = 1  # largest num_examples an update signed with this key may claim
    node: str = ""  # the transport node the client sends from; "" = none registered

    def to_json(self) -> dict[str, Any]:
        """The record as the registry file stores it (public key in base64)."""
        return {
            "key_id": self.key_id,
            "client_id": self.client_id,
            "scheme": self.scheme,
            "public_key": _b64(self.public_key),
            "status": self.status,
            "registered_round": self.registered_round,
            "accept_until_round": self.accept_until_round,
            "max_examples": self.max_examples,
            "node": self.node,
        }


def _int(v: Any, what: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise KeyRegistryError(f"{what}={v!r} must be an int >= {lo}")
    return v


class KeyRegistry:
    """The server's table of client public keys, keyed by key id.

    Example:
        >>> reg = KeyRegistry()
        >>> k = generate_client_key("client-0")
        >>> _ = reg.register(client_id="client-0", key_id=k.key_id, scheme=k.scheme,
        ...                  public_key=k.public_key, max_examples=100)
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
        """The record of ``key_id``, or None."""
        return self._keys.get(key_id)

    def records(self) -> list[KeyRecord]:
        """Every record (active, retired and revoked), sorted by client and key id."""
        return sorted(self._keys.values(), key=lambda r: (r.client_id, r.key_id))

    def active_key(self, client_id: str) -> KeyRecord | None:
        """The client's current signing key, if any."""
        for r in self._keys.values():
            if r.client_id == client_id and r.status == "active":
                return r
        return None

    def register(
        self,
        *,
        client_id: str,
        key_id: str,
        scheme: str,
        public_key: bytes,
        max_examples: int,
        round: int = 0,
        node: str = "",
    ) -> KeyRecord:
        """Add a client's first key. A client with an active key must :meth:`rotate` instead.

        Args:
            max_examples: the client's local data-set size (>= 1); updates claiming more are
                refused.
            round: the first round the key may sign.
            node: the transport node the client sends from, if known when registering; an update
                whose sender the transport cannot name must be signed for this node ("" = none).
        """
        if not isinstance(public_key, bytes | bytearray):
            raise KeyRegistryError(f"public_key of {client_id!r} must be bytes")
        rec = KeyRecord(
            key_id,
            client_id,
            get_scheme(scheme).name,
            bytes(public_key),
            "active",
            _int(round, "round"),
            None,
            _int(max_examples, "max_examples", 1),
            node,
        )
        self._add(rec)
        logger.info("registered key %s (%s) for client %s", key_id, rec.scheme, client_id)
        return rec

    def _add(self, rec: KeyRecord) -> None:
        """The checks every record passes, from :meth:`register` or from a loaded file."""
        if not isinstance(rec.key_id, str) or not rec.key_id or not isinstance(rec.client_id, str):
            raise KeyRegistryError(f"key id {rec.key_id!r} / client id {rec.client_id!r} invalid")
        s = get_scheme(rec.scheme)
        if s.name != rec.scheme:
            raise KeyRegistryError(f"key {rec.key_id}: scheme {rec.scheme!r} is not canonical")
        if len(rec.public_key) != s.public_key_size:
            raise KeyRegistryError(
                f"public key for {rec.client_id!r} has {len(rec.public_key)} bytes, but {s.name} "
                f"public keys have {s.public_key_size}"
            )
        if rec.status not in ("active", "retired", "revoked"):
            raise KeyRegistryError(f"key {rec.key_id}: unknown status {rec.status!r}")
        _int(rec.registered_round, "registered_round")
        _int(rec.max_examples, "max_examples", 1)
        if not isinstance(rec.node, str) or len(rec.node) > _MAX_NODE:
            raise KeyRegistryError(
                f"key {rec.key_id}: node {rec.node!r} must be a string of <= {_MAX_NODE} characters"
            )
        if rec.status == "retired":
            _int(rec.accept_until_round, "accept_until_round of a retired key", -1)
        elif rec.accept_until_round is not None:
            raise KeyRegistryError(f"key {rec.key_id}: only retired keys have accept_until_round")
        if rec.key_id in self._keys:
            raise KeyRegistryError(
                f"key id {rec.key_id!r} is already registered; key ids are never reused"
            )
        if rec.status == "active" and (old := self.active_key(rec.client_id)) is not None:
            raise KeyRegistryError(
                f"client {rec.client_id!r} already has active key {old.key_id!r}; use rotate() "
                "to replace it"
            )
        self._keys[rec.key_id] = rec

    def register_client_key(
        self, key: ClientKey, *, max_examples: int, round: int = 0, node: str = ""
    ) -> KeyRecord:
        """Register the public half of a :class:`ClientKey` (arguments as in :meth:`register`)."""
        return self.register(
            client_id=key.client_id,
            key_id=key.key_id,
            scheme=key.scheme,
            public_key=key.public_key,
            max_examples=max_examples,
            round=round,
            node=node,
        )

    def rotate(
        self,
        *,
        client_id: str,
        key_id: str,
        public_key: bytes,
        round: int,
        scheme: str | None = None,
        grace_rounds: int = 1,
        max_examples: int | None = None,
        node: str | None = None,
    ) -> KeyRecord:
        """Make a new key active from ``round``; the old one stays valid for rounds < round + grace.

        ``round`` may not precede the old key's first round (the last rotation): a rotation into
        the past would re-open rounds the old key already signed. ``max_examples`` and ``node``
        default to the old key's.
        """
        _int(grace_rounds, "grace_rounds")
        old = self.active_key(client_id)
        if old is None:
            raise KeyRegistryError(
                f"client {client_id!r} has no active key to rotate; use register()"
            )
        if _int(round, "round") < old.registered_round:
            raise KeyRegistryError(
                f"rotation at round {round} precedes the last rotation (round "
                f"{old.registered_round}) of client {client_id!r}; rotate at a round >= "
                f"{old.registered_round}"
            )
        self._keys[old.key_id] = replace(
            old, status="retired", accept_until_round=round + grace_rounds - 1
        )
        try:
            return self.register(
                client_id=client_id,
                key_id=key_id,
                scheme=scheme or old.scheme,
                public_key=public_key,
                round=round,
                max_examples=old.max_examples if max_examples is None else max_examples,
                node=old.node if node is None else node,
            )
        except QHybridError:
            self._keys[old.key_id] = old  # keep the registry consistent on a bad new key
            raise

    def revoke(self, key_id: str) -> KeyRecord:
        """Stop accepting ``key_id`` from now on.

        Revoking a client's active key also revokes its retired keys (those still in a grace
        window would otherwise stay valid): the client has no valid key until it registers anew.
        """
        rec = self._keys.get(key_id)
        if rec is None:
            raise KeyRegistryError(f"cannot revoke unknown key id {key_id!r}")
        chain = [rec]
        if rec.status == "active":
            chain += [
                r
                for r in self._keys.values()
                if r.client_id == rec.client_id and r.status == "retired"
            ]
        for r in chain:
            self._keys[r.key_id] = replace(r, status="revoked")
            logger.info("revoked key %s of client %s", r.key_id, r.client_id)
        return self._keys[key_id]

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

    def _body(self) -> bytes:
        """The signed bytes: canonical JSON of the format tag and the records."""
        body = {"format": REGISTRY_FORMAT, "keys": [r.to_json() for r in self.records()]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    def save(self, path: str | Path, *, server_key: ClientKey) -> None:
        """Sign the registry with the server's key and write it atomically (mode 0600)."""
        s = get_scheme(server_key.scheme)
        body = self._body()
        sig = s.sign(server_key.secret_key, body, REGISTRY_CONTEXT)
        doc = {
            **json.loads(body),
            "signature": {"scheme": s.name, "key_id": server_key.key_id, "value": _b64(sig)},
        }
        _write_private(Path(path), json.dumps(doc, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, *, server_public_key: bytes, server_scheme: str) -> KeyRegistry:
        """Read a registry written by :meth:`save`; verify its signature, then every record.

        Args:
            server_public_key, server_scheme: the server's own key (the trust anchor; e.g. the
                public half of the 0600 ``server.json``), never taken from the file itself.

        Raises:
            KeyRegistryError: missing file, bad signature, or a record ``register`` would refuse.
        """
        path = Path(path)
        d = _read_json(path, "key registry")
        if not isinstance(d, dict) or d.get("format") != REGISTRY_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise KeyRegistryError(
                f"{path} is not a qhybrid key registry (format {got!r}, expected "
                f"{REGISTRY_FORMAT!r}); write it with KeyRegistry.save or `qhybrid fl keys`"
            )
        try:
            sig = _unb64(d["signature"]["value"], "signature", path)
            body = json.dumps(
                {"format": d["format"], "keys": d["keys"]}, sort_keys=True, separators=(",", ":")
            ).encode("ascii")
        except (KeyError, TypeError, UnicodeEncodeError) as err:
            raise KeyRegistryError(f"{path} carries no registry signature ({err!r})") from None
        if not get_scheme(server_scheme).verify(server_public_key, body, sig, REGISTRY_CONTEXT):
            raise KeyRegistryError(
                f"{path}: the registry signature does not verify with the server's key; the file "
                "was changed after the server signed it (or belongs to another server)"
            )
        reg = cls()
        try:
            for k in d["keys"]:
                reg._add(
                    KeyRecord(
                        k["key_id"],
                        k["client_id"],
                        k["scheme"],
                        _unb64(k["public_key"], "public_key", path),
                        k["status"],
                        k["registered_round"],
                        k["accept_until_round"],
                        k["max_examples"],
                        k.get("node", ""),  # files written before nodes were registered
                    )
                )
        except (KeyError, TypeError, AttributeError) as err:
            raise KeyRegistryError(f"{path}: malformed key record ({err!r})") from None
        except QHybridError as err:
            raise KeyRegistryError(f"{path}: {err}") from None
        return reg

    def add_public_key_file(
        self, path: str | Path, *, max_examples: int, round: int = 0
    ) -> KeyRecord:
        """Register a client's ``*.pub.json`` (as written by :func:`save_client_key`)."""
        path = Path(path)
        d = _read_json(path, "public-key file")
        try:
            client_id, key_id, scheme = (str(d[k]) for k in ("client_id", "key_id", "scheme"))
            public_key = _unb64(d["public_key"], "public_key", path)
        except (KeyError, TypeError) as err:
            raise KeyRegistryError(f"{path} is not a qhybrid public-key file ({err!r})") from None
        return self.register(
            client_id=client_id,
            key_id=key_id,
            scheme=scheme,
            public_key=public_key,
            round=round,
            max_examples=max_examples,
        )


def provision_keys(
    key_dir: str | Path,
    num_clients: int,
    scheme: str = "ml-dsa-44",
    *,
    max_examples: int | Sequence[int],
    server_scheme: str = "ml-dsa-65",
) -> KeyRegistry:
    """Generate ``client-<i>.json`` key files (0600), the server's ``server.json`` and the signed
    ``registry.json``.

    This is the out-of-band step a deployment does once per client machine; here it writes all
    keys into one directory for simulations. ``max_examples`` is one cap for all clients or one
    per client (their local data-set sizes). Existing key files are never overwritten, and a
    failure while writing removes the files written so far.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise KeyRegistryError(f"num_clients={num_clients!r} must be an int >= 1")
    caps = [max_examples] * num_clients if isinstance(max_examples, int) else list(max_examples)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in caps):
        raise KeyRegistryError(
            f"max_examples={max_examples!r}: each client's cap is its number of training "
            "examples, an int >= 1"
        )
    if len(caps) != num_clients:
        raise KeyRegistryError(f"{len(caps)} max_examples for {num_clients} clients")
    key_dir = Path(key_dir)
    if key_dir.exists() and not key_dir.is_dir():
        raise KeyRegistryError(f"key folder {key_dir} is a file; pass a folder for the keys")
    names = [f"client-{i}" for i in range(num_clients)] + ["server"]
    targets = [key_dir / f"{n}{ext}" for n in names for ext in (".json", ".pub.json")]
    targets.append(key_dir / "registry.json")
    if existing := [p for p in targets if p.exists() or p.is_symlink()]:
        raise KeyRegistryError(
            f"{existing[0]} already exists ({len(existing)} key files in {key_dir}); keys are "
            "never overwritten (a client holding the old key could no longer sign): choose an "
            "empty folder or remove the old keys first"
        )
    reg = KeyRegistry()
    keys = [generate_client_key(f"client-{i}", scheme) for i in range(num_clients)]
    for key, cap in zip(keys, caps, strict=True):
        reg.register_client_key(key, max_examples=cap)  # validate everything before writing
    server = generate_server_key(server_scheme)
    created = not key_dir.exists()
    try:
        for i, key in enumerate(keys):
            save_client_key(key_dir / f"client-{i}.json", key)
        save_client_key(key_dir / "server.json", server)
        reg.save(key_dir / "registry.json", server_key=server)
    except BaseException:  # a half-written key folder would be worse than none
        for p in targets:
            p.unlink(missing_ok=True)
        if created and key_dir.is_dir() and not any(key_dir.iterdir()):
            key_dir.rmdir()
        raise
    return reg


def load_server_registry(key_dir: str | Path) -> KeyRegistry:
    """The registry of ``key_dir``, verified with the server key in ``key_dir/server.json``."""
    server = load_client_key(Path(key_dir) / "server.json")
    return KeyRegistry.load(
        Path(key_dir) / "registry.json",
        server_public_key=server.public_key,
        server_scheme=server.scheme,
    )
