"""Key files and the key registry: permissions, atomic round trips, rotation, revocation, no leaks."""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from pqc_fl.keys import (
    KeyRecord,
    KeyRegistry,
    KeyRegistryError,
    generate_client_key,
    generate_server_key,
    key_fingerprint,
    load_client_key,
    load_server_registry,
    provision_keys,
    save_client_key,
)


def test_key_file_is_owner_only_and_round_trips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = generate_client_key("client-0", "ml-dsa-44")
    pub = save_client_key(tmp_path / "client-0.json", key)
    assert stat.S_IMODE((tmp_path / "client-0.json").stat().st_mode) == 0o600
    assert load_client_key(tmp_path / "client-0.json") == key
    assert key.secret_key.hex() not in repr(key) and "secret" not in repr(key)
    assert key.secret_key.hex() not in caplog.text
    assert b"secret_key" not in pub.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
    assert key.key_id == key_fingerprint("ml-dsa-44", key.public_key)


def test_loading_a_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_client_key(path, generate_client_key("c", "ed25519"))
    os.chmod(path, 0o644)
    with pytest.raises(KeyRegistryError, match="chmod 600"):
        load_client_key(path)
    with pytest.raises(KeyRegistryError, match="does not exist"):
        load_client_key(tmp_path / "missing.json")


SERVER = generate_server_key()


def _load(path: Path) -> KeyRegistry:
    return KeyRegistry.load(path, server_public_key=SERVER.public_key, server_scheme=SERVER.scheme)


def test_registry_save_load_rotate_revoke(tmp_path: Path) -> None:
    reg = KeyRegistry()
    a, b = generate_client_key("a"), generate_client_key("b", "falcon-512")
    reg.register_client_key(a, max_examples=10)
    reg.add_public_key_file(save_client_key(tmp_path / "b.json", b), max_examples=20)
    with pytest.raises(KeyRegistryError, match="use rotate"):
        reg.register_client_key(generate_client_key("a"), max_examples=10)
    with pytest.raises(KeyRegistryError, match="expected|have"):
        reg.register(
            client_id="z", key_id="z1", scheme="ml-dsa-44", public_key=b"short", max_examples=1
        )
    with pytest.raises(KeyRegistryError, match="max_examples=-1"):
        reg.register(
            client_id="z", key_id="z1", scheme="ml-dsa-44", public_key=a.public_key, max_examples=-1
        )
    a2 = generate_client_key("a")
    reg.rotate(client_id="a", key_id=a2.key_id, public_key=a2.public_key, round=3, grace_rounds=1)
    reg.revoke(b.key_id)
    reg.save(tmp_path / "registry.json", server_key=SERVER)
    assert stat.S_IMODE((tmp_path / "registry.json").stat().st_mode) == 0o600
    back = _load(tmp_path / "registry.json")
    assert back.records() == reg.records()
    assert back.get(a2.key_id).max_examples == 10  # type: ignore[union-attr]  # kept on rotation
    assert back.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=3)[1] == "ok"
    assert back.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=4)[1] == "expired_key"
    assert back.check(a2.key_id, client_id="a", scheme="ml-dsa-44", round=4)[1] == "ok"
    assert back.check(b.key_id, client_id="b", scheme="falcon-512", round=4)[1] == "revoked_key"
    assert back.check("nope", client_id="b", scheme="falcon-512", round=4)[1] == "unknown_key"
    assert back.active_key("a").key_id == a2.key_id  # type: ignore[union-attr]


def test_rotation_cannot_go_back_and_revoking_the_active_key_revokes_its_predecessor() -> None:
    reg = KeyRegistry()
    a, a2, a3 = (generate_client_key("a") for _ in range(3))
    reg.register_client_key(a, max_examples=5)
    reg.rotate(client_id="a", key_id=a2.key_id, public_key=a2.public_key, round=6, grace_rounds=3)
    before = reg.records()
    with pytest.raises(KeyRegistryError, match="precedes the last rotation"):
        reg.rotate(client_id="a", key_id=a3.key_id, public_key=a3.public_key, round=5)
    assert reg.records() == before  # nothing changed
    assert reg.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=7)[1] == "ok"  # grace
    reg.revoke(a2.key_id)
    assert reg.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=7)[1] == "revoked_key"
    assert reg.check(a2.key_id, client_id="a", scheme="ml-dsa-44", round=7)[1] == "revoked_key"
    assert reg.active_key("a") is None


def _tampered(tmp_path: Path, edit: object) -> Path:
    """A registry file edited after signing, then re-signed by the server (edit=...) or not."""
    reg = KeyRegistry()
    for c in ("a", "b"):
        reg.register_client_key(generate_client_key(c), max_examples=7)
    reg.revoke(reg.active_key("b").key_id)  # type: ignore[union-attr]
    p = tmp_path / "registry.json"
    reg.save(p, server_key=SERVER)
    d = json.loads(p.read_text())
    edit(d["keys"])  # type: ignore[operator]
    p.write_text(json.dumps(d))
    return p


def test_registry_file_edits_fail_the_server_signature(tmp_path: Path) -> None:
    def revive(keys: list[dict]) -> None:  # type: ignore[type-arg]
        keys[1]["status"] = "active"

    def inflate(keys: list[dict]) -> None:  # type: ignore[type-arg]
        keys[0]["max_examples"] = 2**40

    for edit in (revive, inflate):
        with pytest.raises(KeyRegistryError, match="signature does not verify"):
            _load(_tampered(tmp_path, edit))
    other = generate_server_key()
    p = _tampered(tmp_path, lambda keys: None)
    _load(p)  # untouched: fine
    with pytest.raises(KeyRegistryError, match="signature does not verify"):
        KeyRegistry.load(p, server_public_key=other.public_key, server_scheme=other.scheme)


@pytest.mark.parametrize(
    ("edit", "match"),
    [("two_active", "already has active key"), ("short_key", "bytes"),
     ("dup_id", "already registered"), ("bad_status", "unknown status"),
     ("retired_no_window", "accept_until_round")],
)  # fmt: skip
def test_registry_load_applies_the_register_checks(tmp_path: Path, edit: str, match: str) -> None:
    # a file that a (careless or compromised) signer produced: signature valid, content not
    a, a2 = generate_client_key("a"), generate_client_key("a")
    keys = [
        KeyRecord(a.key_id, "a", "ml-dsa-44", a.public_key, "active", 0, None, 5),
        KeyRecord(a2.key_id, "a", "ml-dsa-44", a2.public_key, "retired", 0, 3, 5),
    ]
    if edit == "two_active":
        keys[1] = replace(keys[1], status="active", accept_until_round=None)
    elif edit == "short_key":
        keys[1] = replace(keys[1], public_key=b"x" * 10)
    elif edit == "dup_id":
        keys[1] = replace(keys[1], key_id=a.key_id)
    elif edit == "bad_status":
        keys[1] = replace(keys[1], status="zombie")  # type: ignore[arg-type]
    else:
        keys[1] = replace(keys[1], accept_until_round=None)
    reg = KeyRegistry()
    reg._keys = {str(i): r for i, r in enumerate(keys)}  # bypass register(), as a forger would
    p = tmp_path / "r.json"
    reg.save(p, server_key=SERVER)
    with pytest.raises(KeyRegistryError, match=match):
        _load(p)


def test_registry_load_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(KeyRegistryError, match="not a qhybrid key registry"):
        _load(p)
    p.write_text("{not json")
    with pytest.raises(KeyRegistryError, match="r.json is not a JSON file"):
        _load(p)
    p.write_text('{"format": "qhybrid-fl-keys/v2", "keys": []}')
    with pytest.raises(KeyRegistryError, match="no registry signature"):
        _load(p)
    p.write_text('{"format": "qhybrid-fl-keys/v2", "keys": [], "signature": {"value": 7}}')
    with pytest.raises(KeyRegistryError, match="'signature' must be a base64 string"):
        _load(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KeyRegistryError, match="r.json is not a JSON file"):
        _load(p)
    with pytest.raises(KeyRegistryError, match="is a folder or device"):
        _load(tmp_path)
    with pytest.raises(KeyRegistryError, match="does not exist"):
        _load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a JSON file"),
        (b"\x00\xff binary", "not a JSON file"),
        (b"[1, 2]", "not a qhybrid client key"),
        (b'{"client_id": "a"}', "not a qhybrid client key"),
        (
            b'{"client_id": "a", "key_id": "k", "scheme": "ml-dsa-44", "public_key": 5, '
            b'"secret_key": "AA=="}',
            "'public_key' must be a base64 string",
        ),
        (
            b'{"client_id": "a", "key_id": "k", "scheme": "ml-dsa-44", "public_key": "!!", '
            b'"secret_key": "AA=="}',
            "'public_key' is not valid base64",
        ),
    ],
)
def test_hostile_key_files_are_refused_with_the_file_named(
    tmp_path: Path, content: bytes, match: str
) -> None:
    p = tmp_path / "client-0.json"
    p.write_bytes(content)
    p.chmod(0o600)
    with pytest.raises(KeyRegistryError, match=match) as err:
        load_client_key(p)
    assert str(p) in str(err.value)
    with pytest.raises(KeyRegistryError, match="is a folder or device|cannot be read"):
        load_client_key(tmp_path)
    reg = KeyRegistry()
    with pytest.raises(KeyRegistryError, match=match.replace("client key", "public-key file")):
        reg.add_public_key_file(p, max_examples=5)
    assert len(reg) == 0


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, None, "3"])
def test_registration_needs_an_example_cap_of_at_least_one(cap: object) -> None:
    key = generate_client_key("a")
    reg = KeyRegistry()
    with pytest.raises(KeyRegistryError, match="max_examples=.* must be an int >= 1"):
        reg.register_client_key(key, max_examples=cap)  # type: ignore[arg-type]
    assert len(reg) == 0


def test_provisioned_key_dir_loads_with_the_server_key(tmp_path: Path) -> None:
    reg = provision_keys(tmp_path, 3, max_examples=[4, 5, 6])
    back = load_server_registry(tmp_path)
    assert back.records() == reg.records()
    assert [r.max_examples for r in back.records()] == [4, 5, 6]
    assert stat.S_IMODE((tmp_path / "server.json").stat().st_mode) == 0o600
