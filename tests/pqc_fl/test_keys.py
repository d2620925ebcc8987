"""Key files and the key registry: permissions, atomic round trips, rotation, revocation, no leaks."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from pqc_fl.keys import (
    KeyRegistry,
    KeyRegistryError,
    generate_client_key,
    key_fingerprint,
    load_client_key,
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


def test_registry_save_load_rotate_revoke(tmp_path: Path) -> None:
    reg = KeyRegistry()
    a, b = generate_client_key("a"), generate_client_key("b", "falcon-512")
    reg.register_client_key(a)
    reg.add_public_key_file(save_client_key(tmp_path / "b.json", b))
    with pytest.raises(KeyRegistryError, match="use rotate"):
        reg.register_client_key(generate_client_key("a"))
    with pytest.raises(KeyRegistryError, match="expected|have"):
        reg.register(client_id="z", key_id="z1", scheme="ml-dsa-44", public_key=b"short")
    a2 = generate_client_key("a")
    reg.rotate(client_id="a", key_id=a2.key_id, public_key=a2.public_key, round=3, grace_rounds=1)
    reg.revoke(b.key_id)
    reg.save(tmp_path / "registry.json")
    assert stat.S_IMODE((tmp_path / "registry.json").stat().st_mode) == 0o600
    back = KeyRegistry.load(tmp_path / "registry.json")
    assert back.records() == reg.records()
    assert back.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=3)[1] == "ok"
    assert back.check(a.key_id, client_id="a", scheme="ml-dsa-44", round=4)[1] == "expired_key"
    assert back.check(a2.key_id, client_id="a", scheme="ml-dsa-44", round=4)[1] == "ok"
    assert back.check(b.key_id, client_id="b", scheme="falcon-512", round=4)[1] == "revoked_key"
    assert back.check("nope", client_id="b", scheme="falcon-512", round=4)[1] == "unknown_key"
    assert back.active_key("a").key_id == a2.key_id  # type: ignore[union-attr]


def test_registry_load_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(KeyRegistryError, match="not a qhybrid key registry"):
        KeyRegistry.load(p)
    p.write_text("{not json")
    with pytest.raises(KeyRegistryError, match="not a valid key registry"):
        KeyRegistry.load(p)
