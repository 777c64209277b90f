"""Device identity end to end: the real cofferd enrolls with the real upstream and
logs in by proof of key; records are bound to the identity that obtained them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.field.identity import IDENTITY_CREDENTIAL, DeviceIdentity
from faults.proxy import Fault, FaultProxy
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe
from fixtures.upstream import Upstream

LEASE = 3600


class Device:
    """One device: its own identity key, device key and dirs; no password."""

    def __init__(
        self, cofferd: Callable[..., CofferdProcess], upstream: Upstream, base: Path
    ) -> None:
        self.cofferd, self.upstream, self.base = cofferd, upstream, base
        self.creds = base / "creds"
        self.creds.mkdir(mode=0o700)
        (self.creds / "coffer-device-key").write_bytes(secrets.token_bytes(32))
        self.identity = DeviceIdentity.generate()
        (self.creds / IDENTITY_CREDENTIAL).write_bytes(self.identity.pkcs8_pem())
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

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.daemon is not None
        return self.daemon.call(method, params)

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

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status")["result"]
        return result


def enroll_token(upstream: Upstream, role: str = "publisher", uses: int = 1) -> str:
    out = upstream.admin(
        "enroll-token", "create", "--uses", str(uses), "--expires", "1h", "--role", role, "--json"
    )
    token: str = json.loads(out.stdout)["token"]
    return token


def devices(upstream: Upstream) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(upstream.admin("device", "ls", "--json").stdout)
    return listed


def code(response: dict[str, Any]) -> int:
    return int(response.get("error", {}).get("code", 0))


@pytest.fixture
def upstream(upstream_factory: Callable[..., Upstream]) -> Upstream:
    return upstream_factory(lease_seconds=LEASE)


@pytest.fixture
def make_device(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream, tmp_path: Path
) -> Callable[[], Device]:
    made = iter(range(100))

    def make() -> Device:
        base = tmp_path / f"dev{next(made)}"
        base.mkdir()
        return Device(cofferd, upstream, base)

    return make


def test_enroll_then_load_by_proof_of_key_then_revoked(
    make_device: Callable[[], Device], upstream: Upstream
) -> None:
    one, two = make_device(), make_device()
    one.start()
    assert one.status()["identity"]["enrolled"] is False
    assert code(one.load("m.bin")[1]) == ErrorCode.UNAUTHORIZED  # no login at all

    token = enroll_token(upstream, "publisher", uses=2)
    enrolled = one.call("enroll", {"token": token})["result"]
    device_id = enrolled["device_id"]
    assert enrolled["role"] == "publisher"
    identity = one.status()["identity"]
    assert identity == {**identity, "enrolled": True, "device_id": device_id}
    assert identity["public_key"] == one.identity.public_key

    content = secrets.token_bytes(200_000)
    one.upload("m.bin", content)
    data, resp = one.load("m.bin")
    assert data == content, resp
    status = one.status()
    assert status["authenticated"] is True
    assert status["field"]["login_source"] == "device"
    assert [r["filename"] for r in status["field"]["records"]] == ["m.bin"]

    # Kept across a restart, bound to the key: the device logs in again by itself.
    one.start()
    assert one.status()["identity"]["device_id"] == device_id
    assert one.load("m.bin")[0] == content

    two.start()
    two_id = two.call("enroll", {"token": token})["result"]["device_id"]
    assert two_id != device_id
    assert two.load("m.bin")[0] == content
    # The token is spent: a third enrollment is refused, and says so.
    three = make_device()
    three.start()
    refused = three.call("enroll", {"token": token})
    assert code(refused) == ErrorCode.UNAUTHORIZED
    assert "spent" in refused["error"]["data"]["detail"]
    assert three.status()["identity"]["enrolled"] is False

    listed = {d["id"]: d for d in devices(upstream)}
    assert set(listed) == {device_id, two_id}

    one.upload("n.bin", b"n" * 1000)
    assert one.load("n.bin")[0] == b"n" * 1000
    upstream.admin("device", "revoke", device_id)
    # A token in hand: refused, signed again, refused: the record goes.
    _, resp = one.load("m.bin")
    assert code(resp) == ErrorCode.UNAUTHORIZED, resp
    assert "device revoked" in resp["error"]["data"]["detail"]
    assert [r["filename"] for r in one.status()["field"]["records"]] == ["n.bin"]
    assert one.status()["authenticated"] is False  # the key stays, the upstream's yes went
    assert two.load("m.bin")[0] == content  # the other device is untouched
    # Restarted with a record: the first login is refused, and that erases it too.
    one.start()
    assert code(one.load("n.bin")[1]) == ErrorCode.UNAUTHORIZED
    assert one.status()["field"]["records"] == []
    assert one.status()["authenticated"] is False

    for device in (one, two, three):
        assert device.daemon is not None
        log = device.daemon.stderr_text()
        assert token not in log
        assert "eyJ" not in log  # no JWT, no access token


def test_enrolled_unattended_from_the_credential_and_a_copied_state_dir_is_ignored(
    make_device: Callable[[], Device], upstream: Upstream
) -> None:
    one = make_device()
    token = enroll_token(upstream, "reader", uses=1)
    (one.creds / "coffer-enroll-token").write_text(token + "\n")
    one.start()
    deadline = time.monotonic() + 20
    while not one.status()["identity"]["enrolled"]:
        assert time.monotonic() < deadline, "not enrolled from the credential"
        time.sleep(0.2)
    state = json.loads((one.base / "state" / "identity.json").read_text())
    assert state["public_key"] == one.identity.public_key
    assert one.status()["identity"]["device_id"] == state["device_id"]

    # Another device with this one's state dir: its key is not the one enrolled.
    other = make_device()
    (other.base / "state" / "identity.json").write_text(json.dumps(state))
    other.start()
    assert other.status()["identity"]["enrolled"] is False
    assert code(other.load("x.bin")[1]) == ErrorCode.UNAUTHORIZED


def test_a_login_wins_over_the_device_and_records_stay_with_their_identity(
    make_device: Callable[[], Device], upstream: Upstream
) -> None:
    device = make_device()
    device.start()
    device.call("enroll", {"token": enroll_token(upstream, "reader")})
    content = secrets.token_bytes(50_000)
    publisher = upstream.publisher
    assert "result" in device.call(
        "login", {"email": publisher.email, "password": publisher.password}
    )
    device.upload("r.bin", content)
    assert device.load("r.bin")[0] == content
    assert device.status()["field"]["login_source"] == "login call"

    # Another identity (the reader) logs in: the publisher's record is not its own.
    reader = upstream.reader
    assert "result" in device.call("login", {"email": reader.email, "password": reader.password})
    assert device.status()["field"]["records"] == []
    upstream.stop()
    _, resp = device.load("r.bin")
    assert code(resp) == ErrorCode.OFFLINE_REFUSED, resp
    upstream.start()

    # After logout the device's own identity is used again, with records of its own.
    assert device.call("logout")["result"]["status"] == "ok"
    assert device.load("r.bin")[0] == content
    assert device.status()["field"]["login_source"] == "device"
    upstream.stop()
    assert device.load("r.bin")[0] == content  # its own record, offline
    upstream.start()


def test_a_late_answer_after_logout_writes_no_record(
    cofferd: Callable[..., CofferdProcess],
    upstream_factory: Callable[..., Upstream],
    tmp_path: Path,
) -> None:
    # cofferd → a proxy that trickles the answer → the upstream: the load's
    # answer comes seconds late, after a logout erased the records. The
    # upstream takes assertions for the proxy's URL too (--audience).
    proxy = FaultProxy()
    upstream = upstream_factory(
        lease_seconds=LEASE, extra_args=("--audience", f"{proxy.url}/v1/token")
    )
    proxy.target = ("127.0.0.1", upstream.port)
    try:
        device = Device(cofferd, upstream, tmp_path)
        device.start(COFFER_UPSTREAM_URL=proxy.url, COFFER_UPSTREAM_TIMEOUT="40")
        assert device.daemon is not None
        assert "result" in device.call("enroll", {"token": enroll_token(upstream)})
        content = secrets.token_bytes(10_000)
        device.upload("late.bin", content)
        assert device.load("late.bin")[0] == content
        assert len(device.status()["field"]["records"]) == 1
        proxy.fault = Fault(trickle=0.002)
        got: list[tuple[bytes, dict[str, Any]]] = []
        began = time.monotonic()
        loader = threading.Thread(target=lambda: got.append(device.load("late.bin")))
        loader.start()
        time.sleep(1.0)
        assert loader.is_alive()  # the answer is still on its way
        assert device.call("logout")["result"]["records_erased"] == 1
        loader.join(60)
        assert not loader.is_alive()
        assert time.monotonic() - began > 2  # it was late indeed
        proxy.fault = Fault()
        assert got[0][0] == content, got[0][1]
        # The answer to the call made before the logout kept nothing.
        assert device.status()["field"]["records"] == []
        device.start(COFFER_UPSTREAM_URL=proxy.url)
        assert device.status()["field"]["records"] == []
    finally:
        proxy.close()


def test_a_record_serves_offline_only_the_identity_that_obtained_it(
    make_device: Callable[[], Device], upstream: Upstream
) -> None:
    # Not enrolled: the boot credential's account logs in (the publisher).
    device = make_device()
    publisher, reader = upstream.publisher, upstream.reader
    login = device.creds / "coffer-login"
    login.write_text(json.dumps({"email": publisher.email, "password": publisher.password}))
    device.start()
    content = secrets.token_bytes(20_000)
    device.upload("p.bin", content)
    assert device.load("p.bin")[0] == content
    assert device.status()["field"]["login_source"] == "credential"

    # Restarted offline under another account's boot credential: the
    # publisher's record is not the reader's.
    upstream.stop()
    login.write_text(json.dumps({"email": reader.email, "password": reader.password}))
    device.start()
    data, resp = device.load("p.bin")
    assert data == b""
    assert code(resp) == ErrorCode.OFFLINE_REFUSED, resp
    assert "another identity" in resp["error"]["data"]["detail"]
    # The account that obtained it is served.
    login.write_text(json.dumps({"email": publisher.email, "password": publisher.password}))
    device.start()
    assert device.load("p.bin")[0] == content
    upstream.start()


def test_unattended_enrollment_waits_out_an_unreachable_upstream(
    make_device: Callable[[], Device], upstream: Upstream
) -> None:
    device = make_device()
    (device.creds / "coffer-enroll-token").write_text(enroll_token(upstream, "reader"))
    upstream.stop()
    device.start(COFFER_UPSTREAM_TIMEOUT="1")  # each attempt's own retries end within 1 s
    time.sleep(4.0)
    assert device.status()["identity"]["enrolled"] is False
    upstream.start()
    deadline = time.monotonic() + 30
    while not device.status()["identity"]["enrolled"]:
        assert time.monotonic() < deadline, "not enrolled once the upstream came"
        time.sleep(0.2)
    assert device.daemon is not None
    log = device.daemon.stderr_text()
    assert "trying again" in log, log  # and tried again
