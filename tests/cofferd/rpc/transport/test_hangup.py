"""Callers that hang up mid-transfer, and many callers at once.

The daemon must survive, publish nothing half-sent, and leak no fd: counted in
``/proc/<pid>/fd`` before and after.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from coffer.protocol import ErrorCode
from fixtures.daemon import CofferdProcess, load_via_pipe, rpc, upload_via_pipe
from fixtures.upstream import Upstream

MIB = 1024 * 1024


@pytest.fixture
def publisher(cofferd: Callable[..., CofferdProcess], upstream: Upstream) -> CofferdProcess:
    daemon = cofferd()
    account = upstream.publisher
    assert daemon.call("login", {"email": account.email, "password": account.password})["result"]
    return daemon


def settle_fds(daemon: CofferdProcess, expected: int, timeout: float = 10.0) -> int:
    """The daemon's open fd count once it is back to ``expected`` or below (or the timeout).

    Below is fine: the HTTP client may drop an idle keep-alive connection meanwhile.
    """
    deadline = time.monotonic() + timeout
    while (count := daemon.open_fds()) > expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def quiet_fds(daemon: CofferdProcess) -> int:
    """The fd count once connections just closed have been let go (stable for 0.5 s)."""
    last, since = daemon.open_fds(), time.monotonic()
    while time.monotonic() - since < 0.5:
        time.sleep(0.05)
        if (now := daemon.open_fds()) != last:
            last, since = now, time.monotonic()
    return last


def logged(daemon: CofferdProcess, text: str, timeout: float = 10.0) -> bool:
    """Whether ``text`` shows in the daemon's log within ``timeout``.

    A call's log line is written after its end by the call-log thread, so a
    caller can see the outcome before the line is there.
    """
    deadline = time.monotonic() + timeout
    while text not in daemon.stderr_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def send_request(sock: socket.socket, method: str, params: dict, fd: int) -> None:
    line = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    socket.send_fds(sock, [line + b"\n"], [fd])


def test_hang_up_mid_load(publisher: CofferdProcess) -> None:
    content = os.urandom(32 * MIB)
    with publisher.connect() as sock:
        publisher.sign(upload_via_pipe(sock, {"filename": "big.bin"}, content)["result"])
        load_via_pipe(sock, {"filename": "big.bin"})  # warm the cache
    baseline = quiet_fds(publisher)
    for _ in range(2):
        sock = publisher.connect()
        r, w = os.pipe()
        send_request(sock, "load", {"filename": "big.bin"}, w)
        os.close(w)
        first = os.read(r, 65536)
        assert first
        assert content.startswith(first)
        os.close(r)
        sock.close()
    assert settle_fds(publisher, baseline) <= baseline
    assert publisher.call("health")["result"]["status"] == "ok"
    assert "Traceback" not in publisher.stderr_text()


def test_hang_up_mid_upload_publishes_nothing(
    publisher: CofferdProcess, upstream: Upstream
) -> None:
    baseline = quiet_fds(publisher)
    blobs = upstream.blob_paths()

    # Truncated: the socket and the pipe go away after half the announced size.
    sock = publisher.connect()
    r, w = os.pipe()
    send_request(sock, "upload", {"filename": "cut.bin", "size": 8 * MIB}, r)
    os.close(r)
    os.write(w, b"x" * (4 * MIB))
    sock.close()
    os.close(w)

    # Complete input, but the caller hung up before it ended: still not published.
    sock = publisher.connect()
    r, w = os.pipe()
    send_request(sock, "upload", {"filename": "gone.bin"}, r)
    os.close(r)
    os.write(w, b"y" * 65536)
    sock.close()
    time.sleep(0.2)
    with open(w, "wb") as pipe:
        pipe.write(b"y" * MIB)

    assert settle_fds(publisher, baseline) <= baseline
    with publisher.connect() as sock:
        for name in ("cut.bin", "gone.bin"):
            assert rpc(sock, "load", {"filename": name})["error"]["code"] == ErrorCode.NOT_FOUND
    assert logged(publisher, "upload error 400")  # short of the announced size
    assert logged(publisher, "upload hung up")  # complete, but the caller was gone: no answer
    # Nothing was committed: any big part sent is an orphan, never a current version.
    assert len(upstream.blob_paths()) <= len(blobs) + 2


def test_fifty_concurrent_clients(publisher: CofferdProcess) -> None:
    content = os.urandom(MIB + 5)
    with publisher.connect() as sock:
        publisher.sign(upload_via_pipe(sock, {"filename": "shared.bin"}, content)["result"])
    errors: list[str] = []
    start = threading.Barrier(50)

    def client(i: int) -> None:
        try:
            with publisher.connect() as sock:
                start.wait(30)
                assert rpc(sock, "health")["result"]["status"] == "ok"
                data, response = load_via_pipe(sock, {"filename": "shared.bin"})
                assert response["result"]["size"] == len(content)
                assert data == content
                assert "authenticated" in rpc(sock, "status")["result"]
        except Exception as exc:
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert publisher.call("health")["result"]["status"] == "ok"
