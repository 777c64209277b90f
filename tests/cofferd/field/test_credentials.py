"""Reading the login and device-key credentials; their content never in errors or reprs."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from cofferd.field.credentials import CredentialError, read_device_key, read_login


def test_login_read_and_hidden(tmp_path: Path) -> None:
    (tmp_path / "coffer-login").write_text('{"email": "a@b.c", "password": "hunter2"}\n')
    found = read_login(tmp_path, "coffer-login")
    assert found is not None
    assert (found.email, found.password) == ("a@b.c", "hunter2")
    assert "hunter2" not in repr(found)


def test_absent_credentials_are_none(tmp_path: Path) -> None:
    assert read_login(tmp_path, "coffer-login") is None
    assert read_login(None, "coffer-login") is None
    assert read_device_key(tmp_path, "coffer-device-key") is None


@pytest.mark.parametrize(
    "content",
    [
        b"hunter2",
        b'{"email": "a@b.c"}',
        b'{"email": "a@b.c", "password": "", "x": 1}',
        b'["hunter2"]',
        b'{"email": "a@b.c", "password": 7}',
    ],
)
def test_bad_login_is_one_clear_error_without_the_content(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "coffer-login").write_bytes(content)
    with pytest.raises(CredentialError, match="credential coffer-login") as err:
        read_login(tmp_path, "coffer-login")
    assert "hunter2" not in str(err.value)


def test_device_key_raw_or_base64(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    (tmp_path / "raw").write_bytes(key)
    (tmp_path / "b64").write_bytes(base64.b64encode(key) + b"\n")
    (tmp_path / "short").write_bytes(key[:31])
    assert read_device_key(tmp_path, "raw") == key
    assert read_device_key(tmp_path, "b64") == key
    with pytest.raises(CredentialError, match="not 32 raw bytes"):
        read_device_key(tmp_path, "short")
