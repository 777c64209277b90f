"""The device identity as cofferd reads it: PKCS#8 Ed25519 only, its content never quoted."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cofferd.field.credentials import CredentialError, read_identity_key
from cofferd.field.identity import (
    IDENTITY_CREDENTIAL,
    STATE_CREDENTIAL,
    DeviceIdentity,
    load_identity,
)
from fixtures.daemon import CofferdProcess

NAME = IDENTITY_CREDENTIAL


def test_pem_or_der_gives_the_same_key(tmp_path: Path) -> None:
    identity = DeviceIdentity.generate()
    (tmp_path / "pem").write_bytes(identity.pkcs8_pem())
    der = identity.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "der").write_bytes(der)
    for name in ("pem", "der"):
        key = read_identity_key(tmp_path, name)
        assert key is not None
        assert DeviceIdentity(key).public_key == identity.public_key
    assert read_identity_key(tmp_path, "absent") is None
    assert read_identity_key(None, NAME) is None


def test_the_public_key_verifies_what_the_identity_signs() -> None:
    identity = DeviceIdentity.generate()
    raw = base64.b64decode(identity.public_key, validate=True)
    assert len(raw) == 32
    Ed25519PublicKey.from_public_bytes(raw).verify(identity.sign(b"claim"), b"claim")
    assert len(identity.key_id) == 16
    assert "PRIVATE" not in repr(identity)
    assert identity.key_id in repr(identity)


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_pem() -> bytes:
    return DeviceIdentity.generate().private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2-pass"),
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"hunter2 is not a key", "not an unencrypted PKCS#8"),
        (b"-----BEGIN PRIVATE KEY-----\nhunter2\n-----END PRIVATE KEY-----\n", "not an unencr"),
        (b"", "not an unencrypted PKCS#8"),
        ("encrypted", "not an unencrypted PKCS#8"),
        ("ec", "not an Ed25519 key"),
    ],
)
def test_anything_else_is_one_clear_error_without_the_content(
    tmp_path: Path, content: bytes | str, says: str
) -> None:
    data = (
        {"encrypted": _encrypted_pem, "ec": _ec_pem}[content]()
        if isinstance(content, str)
        else content
    )
    (tmp_path / NAME).write_bytes(data)
    with pytest.raises(CredentialError, match=f"credential {NAME}: {says}") as err:
        read_identity_key(tmp_path, NAME)
    assert "hunter2" not in str(err.value)
    assert "BEGIN" not in str(err.value)


def test_status_says_new_only_for_the_key_the_state_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identity = DeviceIdentity.generate()
    (tmp_path / NAME).write_bytes(identity.pkcs8_pem())
    assert load_identity(tmp_path).status() == {
        "public_key": identity.public_key,
        "key_id": identity.key_id,
        "new": False,
        "enrolled": False,
    }
    state = {"key_id": identity.key_id, "replaced": True, "reason": "did not open here"}
    (tmp_path / STATE_CREDENTIAL).write_text(json.dumps(state))
    loaded = load_identity(tmp_path)
    assert loaded.new is True
    assert loaded.reason == "did not open here"
    assert "enroll again" in caplog.text
    # A state about another key (stale) says nothing.
    (tmp_path / STATE_CREDENTIAL).write_text(json.dumps({**state, "key_id": "0" * 16}))
    assert load_identity(tmp_path).new is False
    (tmp_path / STATE_CREDENTIAL).write_text("not json")
    assert load_identity(tmp_path).new is False
    assert identity.pkcs8_pem().decode().splitlines()[1] not in caplog.text


def test_no_or_a_bad_identity_is_null_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_identity(tmp_path).status() is None
    (tmp_path / NAME).write_bytes(b"secret-looking garbage")
    assert load_identity(tmp_path).status() is None
    assert "secret-looking" not in caplog.text
    assert f"credential {NAME}: not an unencrypted PKCS#8" in caplog.text


def test_a_running_cofferd_shows_the_identity_its_credential_holds(
    cofferd: Callable[..., CofferdProcess],
) -> None:
    daemon = cofferd(upstream_url="http://127.0.0.1:9")
    pem = (daemon.base / "credentials" / NAME).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    shown = daemon.call("status")["result"]["identity"]
    assert shown == {
        "public_key": DeviceIdentity(key).public_key,
        "key_id": DeviceIdentity(key).key_id,
        "new": False,
        "enrolled": False,
        "device_id": None,
    }
    # Another daemon, another key: the fixture makes one per daemon.
    other = cofferd(upstream_url="http://127.0.0.1:9")
    assert other.call("status")["result"]["identity"]["public_key"] != shown["public_key"]
    daemon.stop()
    assert pem.decode().splitlines()[1] not in daemon.stderr_text()
