"""Signed leases on GET /v1/resources/{folder}/{name}, and ``coffer-upstream lease-key``.

Leases are verified here as a device would: with the public key the CLI
prints, over the payload bytes, before the payload is parsed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fixtures import zygote
from fixtures.upstream import COMMAND, Upstream, add_user

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)

WEEK = 7 * 24 * 3600


def lease_key(data_dir: Path) -> dict[str, str]:
    done = zygote.run(
        [*COMMAND, "lease-key", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key: dict[str, str] = json.loads(done.stdout)
    return key


def unb64url(text: str) -> bytes:
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key(key: dict[str, str]) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))


def verified_payload(lease: dict[str, str], key: dict[str, str]) -> dict[str, Any]:
    """The claims of a lease whose signature verifies; InvalidSignature otherwise."""
    payload = unb64url(lease["payload"])
    public_key(key).verify(unb64url(lease["signature"]), payload)
    claims: dict[str, Any] = json.loads(payload)
    return claims


def get(upstream: Upstream, folder: str = "models", name: str = "m") -> requests.Response:
    response = requests.get(
        f"{upstream.url}/v1/resources/{folder}/{name}",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_lease_verifies_with_the_printed_key_and_says_what_was_served(
    upstream: Upstream,
) -> None:
    big, small, key = os.urandom(5000), os.urandom(40), os.urandom(32)
    upstream.publish("models", "m", big, small=small, key=key, plaintext_size=4321)
    version = upstream.publish("models", "m", big, small=small, key=key, plaintext_size=4321)
    before = int(time.time())
    response = get(upstream)
    after = time.time()
    body = response.json()
    printed = lease_key(upstream.data_dir)
    lease = body["lease"]
    assert set(lease) == {"payload", "signature", "key_id"}
    assert lease["key_id"] == printed["key_id"]
    claims = verified_payload(lease, printed)
    assert claims == {
        "v": 1,
        "sub": upstream.reader.email,
        "folder": "models",
        "name": "m",
        "version": version,
        "key_sha256": hashlib.sha256(key).hexdigest(),
        "small_sha256": hashlib.sha256(small).hexdigest(),
        "big_sha256": hashlib.sha256(big).hexdigest(),
        "big_size": len(big),
        "plaintext_size": 4321,
        "iat": claims["iat"],
        "exp": claims["iat"] + WEEK,
    }
    assert before <= claims["iat"] <= after
    # The Date header and iat come from the same clock.
    date = parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(date - claims["iat"]) <= 1
    # The lease speaks of the key by digest only.
    assert base64.b64encode(key).decode() not in lease["payload"]
    assert base64.b64decode(body["key"]) == key


def test_the_lease_key_digest_tells_versions_apart(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one", key=bytes(32))
    first = verified_payload(get(upstream).json()["lease"], lease_key(upstream.data_dir))
    upstream.publish("models", "m", b"two", key=bytes([1]) * 32)
    second = verified_payload(get(upstream).json()["lease"], lease_key(upstream.data_dir))
    assert (first["version"], second["version"]) == (1, 2)
    assert first["key_sha256"] == hashlib.sha256(bytes(32)).hexdigest()
    assert second["key_sha256"] == hashlib.sha256(bytes([1]) * 32).hexdigest()


def test_a_tampered_lease_fails_verification(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"big")
    lease = get(upstream).json()["lease"]
    key = lease_key(upstream.data_dir)
    payload = unb64url(lease["payload"])
    longer = payload.replace(b'"exp":', b'"exp":9')
    assert longer != payload
    signature = unb64url(lease["signature"])
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    for bad_payload, bad_signature in ((longer, signature), (payload, flipped)):
        with pytest.raises(InvalidSignature):
            public_key(key).verify(bad_signature, bad_payload)
    with pytest.raises(InvalidSignature):
        Ed25519PrivateKey.generate().public_key().verify(signature, payload)


def test_lease_seconds_is_a_server_setting(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    reader = add_user(data_dir, "reader@example.com", secrets.token_hex(8), "reader")
    publisher = add_user(data_dir, "publisher@example.com", secrets.token_hex(8), "publisher")
    with _Serving(data_dir, "--lease-seconds", "90") as url:
        upstream = Upstream(data_dir, reader, publisher)
        upstream.url = url
        upstream.publish("models", "m", b"big")
        claims = verified_payload(get(upstream).json()["lease"], lease_key(data_dir))
    assert claims["exp"] - claims["iat"] == 90


@pytest.mark.parametrize("seconds", ["0", "-5"])
def test_a_lease_of_no_time_is_refused_at_start(tmp_path: Path, seconds: str) -> None:
    done = zygote.run(
        [*COMMAND, "serve", "--port", "0", "--data-dir", str(tmp_path), "--lease-seconds", seconds],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "lease_seconds must be positive" in done.stderr


def test_key_is_made_on_first_start_0600_and_kept_across_restarts(upstream: Upstream) -> None:
    path = upstream.data_dir / "lease-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    printed = lease_key(upstream.data_dir)
    upstream.publish("models", "m", b"big")
    upstream.stop()
    upstream.start()
    lease = get(upstream).json()["lease"]
    assert lease["key_id"] == printed["key_id"]
    verified_payload(lease, printed)
    assert lease_key(upstream.data_dir) == printed


def test_lease_key_cli_makes_one_key_even_when_run_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda _: lease_key(data_dir), range(4)))
    assert all(key == keys[0] for key in keys)
    raw = base64.b64decode(keys[0]["public_key"], validate=True)
    assert len(raw) == 32
    assert keys[0]["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    assert stat.S_IMODE((data_dir / "lease-key.pem").stat().st_mode) == 0o600
    assert not [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")]
    plain = zygote.run(
        [*COMMAND, "lease-key", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert plain.stdout == keys[0]["public_key"] + "\n"


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    lease_key(tmp_path)
    (tmp_path / "lease-key.pem").chmod(0o644)
    done = zygote.run(
        [*COMMAND, "lease-key", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "chmod 600" in done.stderr
    assert "PRIVATE" not in done.stderr


class _Serving:
    """``coffer-upstream serve`` with extra options, for settings the fixture does not take."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        self._command = [*COMMAND, "serve", "--port", "0", "--data-dir", str(data_dir), *options]
        self._out = data_dir.parent / "serve.out"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        with self._out.open("wb") as out:
            self._process = subprocess.Popen(self._command, stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._process.poll() is None:
            first, newline, _ = self._out.read_text().partition("\n")
            if newline:
                assert first.startswith("listening on "), first
                return first.removeprefix("listening on ")
            time.sleep(0.01)
        self._process.kill()
        self._process.wait()
        raise AssertionError("coffer-upstream serve did not start")

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.terminate()
        assert self._process.wait(timeout=10) == 0
