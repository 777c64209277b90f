"""The transport's per-caller limits in process: per-uid cap, deadlines, parked fds, log rate."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.dispatcher import Dispatcher
from cofferd.rpc.dispatch.spec import MethodSpec
from cofferd.rpc.transport.limits import RateLimitedLog
from cofferd.rpc.transport.listen import bind_unix
from cofferd.rpc.transport.server import Server
from fixtures.daemon import read_response, rpc


def echo(call: Call, /) -> dict[str, Any]:
    return {"fds": len(call.fds)}


def nap(call: Call, /, seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {}


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Path, Server]]]:
    servers: list[tuple[Server, threading.Thread]] = []
    # Short: a socket path must stay under the 108 bytes AF_UNIX allows.
    base = Path(tempfile.mkdtemp(prefix="cfl-"))

    def start(**options: Any) -> tuple[Path, Server]:
        path = base / f"{len(servers)}.sock"
        table = [MethodSpec("echo", echo, "echo"), MethodSpec("nap", nap, "nap")]
        server = Server(bind_unix(path), Dispatcher(table), None, unlink_path=path, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return path, server

    yield start
    for server, thread in servers:
        server.request_stop()
        thread.join(10)
        server.shutdown(1.0)
    shutil.rmtree(base, ignore_errors=True)


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def test_one_uid_is_capped_below_the_total(serve: Callable[..., tuple[Path, Server]]) -> None:
    path, _ = serve(max_connections=10, max_per_uid=2)
    a, b = connect(path), connect(path)
    assert rpc(a, "echo")["result"]
    assert rpc(b, "echo")["result"]
    with connect(path) as c:
        refusal = read_response(c)
        assert refusal["error"]["code"] == ErrorCode.BUSY
        assert f"uid {os.getuid()}" in refusal["error"]["data"]["detail"]
        assert c.recv(1) == b""
    a.close()
    time.sleep(0.2)  # the slot comes back when its connection ends
    with connect(path) as d:
        assert rpc(d, "echo")["result"]
    b.close()


def test_idle_and_partial_lines_have_deadlines(serve: Callable[..., tuple[Path, Server]]) -> None:
    path, _ = serve(idle_timeout=0.8, partial_line_timeout=0.3)
    with connect(path) as idle, connect(path) as partial:
        partial.sendall(b'{"jsonrpc":')
        start = time.monotonic()
        assert partial.recv(1) == b""
        assert time.monotonic() - start < 0.8
        assert rpc(idle, "echo")["result"]  # a request renews the idle clock
        start = time.monotonic()
        assert idle.recv(1) == b""
        assert 0.5 < time.monotonic() - start < 2.0


def test_a_call_longer_than_the_deadlines_is_not_cut(
    serve: Callable[..., tuple[Path, Server]],
) -> None:
    path, _ = serve(idle_timeout=0.3, partial_line_timeout=0.2)
    with connect(path) as sock:
        # The deadlines bound the wait for a request, not the call it starts.
        assert rpc(sock, "nap", {"seconds": 0.8})["result"] == {}
        assert rpc(sock, "echo")["result"]  # and the idle clock starts again after it


def test_fds_parked_ahead_of_their_line_are_closed_at_once(
    serve: Callable[..., tuple[Path, Server]],
) -> None:
    path, _ = serve()
    r, w = os.pipe()
    with connect(path) as sock:
        socket.send_fds(sock, [b" "], [w, w, w])
        socket.send_fds(sock, [b" "], [w])
        os.close(w)
        time.sleep(0.2)
        # Every copy cofferd was sent is closed before the line ends: EOF now.
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""
        sock.sendall(b'{"jsonrpc":"2.0","method":"echo","id":3}\n')
        answer = read_response(sock)
        assert answer["id"] == 3
        assert rpc(sock, "echo")["result"] == {"fds": 0}
    os.close(r)


def test_failed_accepts_log_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    accept_log = RateLimitedLog("accept failed", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="cofferd.rpc")
    for _ in range(50):
        accept_log.warn(os.strerror(errno.EMFILE))
    now[0] += 11
    accept_log.warn(os.strerror(errno.EMFILE))
    lines = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "50 time(s)" in lines[1]
    assert "Too many open files" in lines[1]
