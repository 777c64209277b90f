"""Offline use end to end: the real cofferd, the real reference upstream, stopped and restarted.

cofferd logs in from a credentials directory (the boot credential), keeps
sealed records under its state dir, and is restarted on the same dirs to show
that records survive. The clock is moved with the ``clock_offset`` setting.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from coffer.protocol import ErrorCode
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe
from fixtures.upstream import Upstream

LEASE = 3600


class Device:
    """One device's dirs and credentials; ``start()`` runs cofferd on them (again)."""

    def __init__(
        self, cofferd: Callable[..., CofferdProcess], upstream: Upstream, base: Path
    ) -> None:
        self.cofferd, self.upstream, self.base = cofferd, upstream, base
        self.creds = base / "creds"
        self.creds.mkdir(mode=0o700)
        account = upstream.publisher
        (self.creds / "coffer-login").write_text(
            json.dumps({"email": account.email, "password": account.password})
        )
        (self.creds / "coffer-device-key").write_bytes(secrets.token_bytes(32))
        for d in ("cache", "state"):
            (base / d).mkdir()
        self.daemon: CofferdProcess | None = None

    def start(self, **env: str) -> CofferdProcess:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.stop()
        full = {
            "CREDENTIALS_DIRECTORY": str(self.creds),
            "COFFER_LEASE_PUBLIC_KEYS": self.upstream.lease_key(),
            "COFFER_CACHE_DIR": str(self.base / "cache"),
            "COFFER_STATE_DIR": str(self.base / "state"),
            "COFFER_UPSTREAM_TIMEOUT": "5",
            **env,
        }
        self.daemon = self.cofferd(upstream_url=self.upstream.url, env=full)
        return self.daemon

    def load(self, name: str) -> tuple[bytes, dict[str, Any]]:
        assert self.daemon is not None
        with self.daemon.connect() as sock:
            return load_via_pipe(sock, {"filename": name})

    def upload(self, name: str, data: bytes) -> None:
        assert self.daemon is not None
        with self.daemon.connect() as sock:
            done = upload_via_pipe(sock, {"filename": name}, data)
        assert "result" in done, done
        self.daemon.sign(done["result"])

    def field(self) -> dict[str, Any]:
        assert self.daemon is not None
        status: dict[str, Any] = self.daemon.call("status")["result"]["field"]
        return status


@pytest.fixture
def device(
    cofferd: Callable[..., CofferdProcess],
    upstream_factory: Callable[..., Upstream],
    tmp_path: Path,
) -> Device:
    upstream = upstream_factory(lease_seconds=LEASE)
    return Device(cofferd, upstream, tmp_path)


def refused(response: dict[str, Any], reason: str) -> None:
    assert response.get("error", {}).get("code") == ErrorCode.OFFLINE_REFUSED, response
    assert reason in response["error"]["data"]["detail"], response["error"]


def detail(response: dict[str, Any]) -> str:
    return str(response["error"].get("data", {}).get("detail", ""))


def test_boot_login_then_offline_within_the_lease_and_after_a_restart(device: Device) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)
    device.start()
    device.upload("m.bin", content)  # no login call: the boot credential is used
    data, resp = device.load("m.bin")
    assert data == content
    assert resp["result"]["version"] == 1
    field = device.field()
    assert field["login_source"] == "credential"
    assert field["device_key"] is True
    assert field["mode"] == "online"
    (record,) = field["records"]
    assert record["filename"] == "m.bin"
    assert record["lease_expires"] == pytest.approx(time.time() + LEASE, abs=60)

    device.upstream.stop()
    began = time.monotonic()
    data, resp = device.load("m.bin")
    assert data == content, resp
    assert time.monotonic() - began < 5  # refused connections decide at once
    field = device.field()
    assert field["mode"] == "offline"
    assert field["upstream_reachable"] is False
    assert field["records"][0]["lease_expires"] == record["lease_expires"]

    # Restarted while the upstream is down: the sealed record still serves.
    device.start()
    data, resp = device.load("m.bin")
    assert data == content, resp

    # Never loaded: nothing to serve.
    refused(device.load("other.bin")[1], "no record")

    # The lease ends: refused, saying when.
    device.start(COFFER_CLOCK_OFFSET=str(LEASE + 60))
    data, resp = device.load("m.bin")
    assert data == b""
    refused(resp, "the lease expired at")

    # The clock set back behind the trusted time: refused.
    device.start(COFFER_CLOCK_OFFSET=str(-3600))
    data, resp = device.load("m.bin")
    assert data == b""
    refused(resp, "behind the trusted time")

    # Back online, loads go to the upstream again.
    device.upstream.start()
    device.start()
    data, resp = device.load("m.bin")
    assert data == content
    assert device.field()["mode"] == "online"


def test_retired_resource_is_erased_at_once(device: Device) -> None:
    device.start()
    device.upload("gone.bin", b"x" * 100_000)
    assert device.load("gone.bin")[0] == b"x" * 100_000
    assert [r["filename"] for r in device.field()["records"]] == ["gone.bin"]
    up = device.upstream
    resp = requests.delete(
        f"{up.url}/v1/resources/models/gone.bin", headers=up.auth(up.publisher), timeout=30
    )
    assert resp.status_code == 200
    _, answer = device.load("gone.bin")
    assert answer["error"]["code"] == ErrorCode.NOT_FOUND
    assert device.field()["records"] == []
    up.stop()
    refused(device.load("gone.bin")[1], "no record")


def test_a_user_disabled_upstream_is_erased_from_the_device(device: Device) -> None:
    device.start()
    device.upload("d.bin", b"d" * 10_000)
    assert device.load("d.bin")[0] == b"d" * 10_000
    assert [r["filename"] for r in device.field()["records"]] == ["d.bin"]
    up = device.upstream
    done = up.admin("user", "disable", up.publisher.email)
    assert done.returncode == 0, done.stderr
    # The device's token stops at once; its login is refused too: the 401 erases.
    _, answer = device.load("d.bin")
    assert answer["error"]["code"] == ErrorCode.UNAUTHORIZED
    assert device.field()["records"] == []
    up.stop()
    refused(device.load("d.bin")[1], "no record")


def test_logout_drops_login_and_records(device: Device) -> None:
    daemon = device.start()
    device.upload("a.bin", b"a" * 1000)
    assert device.load("a.bin")[0] == b"a" * 1000
    assert daemon.call("logout")["result"] == {"status": "ok", "records_erased": 1}
    field = device.field()
    assert field["records"] == []
    assert field["login_source"] == "none"
    assert daemon.call("status")["result"]["authenticated"] is False
    assert device.load("a.bin")[1]["error"]["code"] == ErrorCode.UNAUTHORIZED


def test_tampered_record_is_refused(device: Device) -> None:
    device.start()
    device.upload("t.bin", b"t" * 5000)
    assert device.load("t.bin")[0] == b"t" * 5000
    assert device.daemon is not None
    device.daemon.stop()
    db = sqlite3.connect(device.base / "state" / "index.sqlite3")
    (sealed,) = db.execute("SELECT sealed FROM records WHERE name = 't.bin'").fetchone()
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    db.execute("UPDATE records SET sealed = ? WHERE name = 't.bin'", (bytes(flipped),))
    db.commit()
    db.close()
    device.upstream.stop()
    device.start()
    data, resp = device.load("t.bin")
    assert data == b""
    refused(resp, "does not open with this device's key")


def test_record_is_unreadable_without_the_device_key(device: Device) -> None:
    device.start()
    device.upload("k.bin", b"k" * 5000)
    assert device.load("k.bin")[0] == b"k" * 5000
    (device.creds / "coffer-device-key").write_bytes(secrets.token_bytes(32))
    device.upstream.stop()
    device.start()
    data, resp = device.load("k.bin")
    assert data == b""
    refused(resp, "does not open")


def test_lease_signed_by_a_key_not_pinned_is_not_kept(device: Device) -> None:
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    device.start(COFFER_LEASE_PUBLIC_KEYS=other)
    device.upload("p.bin", b"p" * 5000)
    assert device.load("p.bin")[0] == b"p" * 5000
    assert device.field()["records"] == []
    assert device.daemon is not None
    assert "signed by a key that is not pinned" in device.daemon.stderr_text()
    device.upstream.stop()
    refused(device.load("p.bin")[1], "no record")


def test_upstream_killed_and_restarted_while_loads_run(device: Device) -> None:
    content = os.urandom(512 * 1024)
    device.start()
    device.upload("busy.bin", content)
    assert device.load("busy.bin")[0] == content
    failures: list[str] = []
    done = threading.Event()
    count = 0

    def loader() -> None:
        nonlocal count
        while not done.is_set():
            try:
                data, resp = device.load("busy.bin")
            except (OSError, ConnectionError) as exc:
                failures.append(repr(exc))
                continue
            if data != content:
                failures.append(json.dumps(resp)[:300])
            count += 1

    threads = [threading.Thread(target=loader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            time.sleep(0.5)
            device.upstream.stop()
            time.sleep(1.0)
            device.upstream.start()
    finally:
        time.sleep(0.5)
        done.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:3]
    assert count > 10


def test_boot_login_retries_until_the_upstream_comes(device: Device) -> None:
    device.upstream.stop()
    daemon = device.start()
    assert daemon.call("status")["result"]["authenticated"] is False
    deadline = time.monotonic() + 30  # the first attempt and its retries fail
    while "boot login failed" not in daemon.stderr_text():
        assert time.monotonic() < deadline, daemon.stderr_text()[-2000:]
        time.sleep(0.2)
    device.upstream.start()
    deadline = time.monotonic() + 30  # backoff of 1, 2, 4, 8 s (jittered down)
    while not daemon.call("status")["result"]["authenticated"]:
        assert time.monotonic() < deadline, daemon.stderr_text()[-2000:]
        time.sleep(0.2)
    assert device.field()["login_source"] == "credential"
    assert device.upstream.publisher.password not in daemon.stderr_text()
