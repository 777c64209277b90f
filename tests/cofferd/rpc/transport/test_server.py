"""The transport in process, on a real socket: fds, the connection cap, shutdown."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.errors import ListenError, NotFound
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.dispatcher import Dispatcher
from cofferd.rpc.dispatch.spec import MethodSpec
from cofferd.rpc.transport.listen import bind_unix
from cofferd.rpc.transport.server import CANCEL_WAIT, Server
from fixtures.daemon import read_response, rpc

entered = threading.Event()


def echo(call: Call, /, value: object = None) -> dict[str, Any]:
    return {"value": value, "uid": call.peer.uid, "pid": call.peer.pid}


def wait(call: Call, /) -> dict[str, Any]:
    """Runs until cancelled, as a long transfer would, checking between chunks."""
    entered.set()
    while not call.cancel.wait(0.02):
        pass
    call.check()
    return {}


def nap(call: Call, /) -> dict[str, Any]:
    entered.set()
    time.sleep(0.3)
    return {"slept": True}


released = threading.Event()


def stuck(call: Call, /) -> dict[str, Any]:
    """Blind to the cancel, as a read from a stalled upstream is."""
    entered.set()
    released.wait(30)
    return {"late": True}


def missing(call: Call, /) -> dict[str, Any]:
    raise NotFound("no such thing")


def broken(call: Call, /) -> dict[str, Any]:
    raise RuntimeError("internal detail /secret/path")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cft-"))
    yield path
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def start(sock_dir: Path, **options: Any) -> tuple[Server, threading.Thread, Path]:
    entered.clear()
    path = sock_dir / "s.sock"
    methods = {
        "echo": echo,
        "wait": wait,
        "nap": nap,
        "stuck": stuck,
        "missing": missing,
        "broken": broken,
    }
    table = [MethodSpec(name, func, name) for name, func in methods.items()]
    server = Server(bind_unix(path), Dispatcher(table), None, unlink_path=path, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, path


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(path))
    return sock


def stop(server: Server, thread: threading.Thread, grace: float = 1.0) -> None:
    server.request_stop()
    thread.join(10)
    server.shutdown(grace)


def test_peer_credentials_and_error_mapping(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir)
    try:
        with connect(path) as sock:
            result = rpc(sock, "echo", {"value": [1, "two"]})["result"]
            assert result == {"value": [1, "two"], "uid": os.getuid(), "pid": os.getpid()}
            err = rpc(sock, "missing")["error"]
            assert err == {"code": 404, "message": "Not found", "data": {"detail": "no such thing"}}
            err = rpc(sock, "broken")["error"]
            assert err["code"] == ErrorCode.INTERNAL_ERROR
            assert "secret" not in json.dumps(err)
            assert rpc(sock, "echo")["result"]["value"] is None
    finally:
        stop(server, thread)
    assert not path.exists()


def test_unused_fds_are_closed_and_notification_fds_too(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir)
    try:
        with connect(path) as sock:
            r, w = os.pipe()
            assert rpc(sock, "echo", fds=[w])["result"]
            note = json.dumps({"jsonrpc": "2.0", "method": "echo"}).encode() + b"\n"
            socket.send_fds(sock, [note], [w])
            os.close(w)
            assert rpc(sock, "echo")["result"]
            with os.fdopen(r, "rb") as r_file:
                # EOF only once cofferd closed both copies it was sent.
                assert r_file.read() == b""
    finally:
        stop(server, thread)


def test_connections_past_the_cap_are_told_and_closed(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir, max_connections=1)
    try:
        with connect(path) as first:
            assert rpc(first, "echo")["result"]
            with connect(path) as second:
                response = read_response(second)
                assert response["error"]["code"] == ErrorCode.BUSY
                assert response["error"]["message"] == "Busy"
                assert second.recv(1) == b""
            assert rpc(first, "echo")["result"]
    finally:
        stop(server, thread)


def test_shutdown_cancels_calls_that_outlive_the_grace(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir)
    with connect(path) as busy, connect(path) as idle:
        assert rpc(idle, "echo")["result"]
        request = json.dumps({"jsonrpc": "2.0", "method": "wait", "id": 5}).encode() + b"\n"
        busy.sendall(request)
        assert entered.wait(10)
        assert server.in_flight() == 1
        started = time.monotonic()
        stop(server, thread, grace=0.3)
        assert time.monotonic() - started < 5
        response = read_response(busy)
        assert response["id"] == 5
        assert response["error"]["code"] == ErrorCode.SHUTTING_DOWN
        assert idle.recv(1) == b""  # idle connections are simply closed


def test_a_call_blind_to_the_cancel_is_answered_by_the_transport(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir)
    released.clear()
    try:
        with connect(path) as sock:
            sock.sendall(
                json.dumps({"jsonrpc": "2.0", "method": "stuck", "id": "s"}).encode() + b"\n"
            )
            assert entered.wait(10)
            server.request_stop()
            thread.join(10)
            started = time.monotonic()
            assert server.shutdown(0.2) == 1  # one call left running
            assert time.monotonic() - started < 0.2 + CANCEL_WAIT + 1
            response = read_response(sock)
            assert response["id"] == "s"
            assert response["error"]["code"] == ErrorCode.SHUTTING_DOWN
            assert sock.recv(1) == b""  # shut: the late answer never comes
            released.set()
            time.sleep(0.1)
            assert sock.recv(1) == b""
    finally:
        released.set()


def test_bind_refuses_what_it_cannot_tell_is_stale(sock_dir: Path) -> None:
    with pytest.raises(ListenError, match="does not exist"):
        bind_unix(sock_dir / "missing" / "s.sock")
    live = bind_unix(sock_dir / "live.sock")
    try:
        with pytest.raises(ListenError, match="already serves"):
            bind_unix(sock_dir / "live.sock")
    finally:
        live.close()
    stale = bind_unix(sock_dir / "live.sock")  # closed but not removed: stale, replaced
    stale.close()


def test_calls_that_finish_in_the_grace_end_their_connection(sock_dir: Path) -> None:
    server, thread, path = start(sock_dir)
    with connect(path) as sock:
        sock.sendall(json.dumps({"jsonrpc": "2.0", "method": "nap", "id": 1}).encode() + b"\n")
        assert entered.wait(10)
        started = time.monotonic()
        stop(server, thread, grace=10)
        # Not the whole grace: the connection closed as soon as its call answered.
        assert time.monotonic() - started < 3
        assert read_response(sock)["result"] == {"slept": True}
        assert sock.recv(1) == b""
