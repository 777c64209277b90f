"""The client library's wire logic against a tiny real Unix-socket server.

Answers cofferd never gives (garbage, wrong ids, silence, every error code on
demand) come from the server in coffer_wire; the real daemon is exercised in
test_client_daemon.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from coffer_wire import error, result, serving

from coffer import client as cc
from coffer.protocol import MAX_LINE_BYTES, ErrorCode


def test_call_speaks_json_rpc_and_keeps_the_connection(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    with (
        serving(sock, lambda req, fds, conn: result(req, {"echo": req.get("params")})) as srv,
        cc.Client(sock) as c,
    ):
        assert c.call("health", {}) == {"echo": {}}
        assert c.call("x", {"a": [1, "é"]}) == {"echo": {"a": [1, "é"]}}
    assert srv.connections == 1
    first, second = srv.requests
    assert first == {"jsonrpc": "2.0", "method": "health", "params": {}, "id": first["id"]}
    assert second["id"] != first["id"]


_CODES = [
    (ErrorCode.BAD_REQUEST, cc.BadRequest),
    (ErrorCode.INVALID_PARAMS, cc.InvalidParams),
    (ErrorCode.TOO_LARGE, cc.TooLarge),
    (ErrorCode.UNAUTHORIZED, cc.Unauthorized),
    (ErrorCode.NOT_FOUND, cc.NotFound),
    (ErrorCode.CONFLICT, cc.Conflict),
    (ErrorCode.UNTRUSTED, cc.Untrusted),
    (ErrorCode.UPSTREAM_BAD_DATA, cc.UpstreamBadData),
    (ErrorCode.UPSTREAM_UNAVAILABLE, cc.UpstreamUnavailable),
    (ErrorCode.SHUTTING_DOWN, cc.ShuttingDown),
    (ErrorCode.BUSY, cc.DaemonBusy),
    (ErrorCode.INTERNAL_ERROR, cc.InternalError),
    (ErrorCode.METHOD_NOT_FOUND, cc.MethodNotFound),
    (ErrorCode.PARSE_ERROR, cc.ProtocolError),
    (ErrorCode.INVALID_REQUEST, cc.ProtocolError),
    (499, cc.CofferRPCError),
]


@pytest.mark.parametrize(("code", "cls"), _CODES)
def test_error_codes_map_to_exception_types(
    tmp_path: Path, code: int, cls: type[cc.CofferRPCError]
) -> None:
    sock = tmp_path / "s"
    with (
        serving(sock, lambda req, fds, conn: error(req, code, "do this", "Short")),
        cc.Client(sock) as c,
        pytest.raises(cls) as info,
    ):
        c.call("m", {})
    assert type(info.value) is cls
    assert (info.value.code, info.value.message, info.value.detail) == (code, "Short", "do this")
    assert str(info.value) == "do this"


def test_busy_is_told_by_its_code_not_guessed(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    busy = {"code": 429, "message": "Busy", "data": {"detail": "too many connections"}}
    line = json.dumps({"jsonrpc": "2.0", "id": None, "error": busy}).encode() + b"\n"
    with (
        serving(sock, lambda req, fds, conn: line),
        cc.Client(sock) as c,
        pytest.raises(cc.DaemonBusy, match="too many connections"),
    ):
        c.call("m", {})


def test_error_without_detail_falls_back_to_message(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    answer = {"jsonrpc": "2.0", "id": 1, "error": {"code": 404, "message": "Not found"}}
    with (
        serving(sock, lambda req, fds, conn: answer),
        cc.Client(sock) as c,
        pytest.raises(cc.NotFound, match="Not found"),
    ):
        c.call("m", {})


@pytest.mark.parametrize(
    "answer",
    [
        b"not json\n",
        b'{"jsonrpc": "1.0", "id": 1, "result": {}}\n',
        b'{"jsonrpc": "2.0", "id": 99, "result": {}}\n',
        b'{"jsonrpc": "2.0", "id": 1}\n',
        b"[1, 2]\n",
    ],
)
def test_answers_outside_the_protocol_are_protocol_errors(tmp_path: Path, answer: bytes) -> None:
    sock = tmp_path / "s"
    with serving(sock, lambda req, fds, conn: answer) as srv, cc.Client(sock) as c:
        with pytest.raises(cc.ProtocolError):
            c.call("m", {})
        # The connection was dropped: the next call starts a fresh one.
        with pytest.raises(cc.ProtocolError):
            c.call("m", {})
        assert srv.connections == 2


def test_daemon_hanging_up_before_answering(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def hang_up(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        if req["method"] == "die":
            conn.shutdown(socket.SHUT_RDWR)
        return result(req, {})

    with serving(sock, hang_up) as srv, cc.Client(sock) as c:
        with pytest.raises(cc.DaemonUnavailable, match="closed the connection"):
            c.call("die", {})
        assert c.call("ok", {}) == {}
        assert srv.connections == 2


def test_a_connection_closed_between_calls_is_reopened_once(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    closed = threading.Event()

    def answer_then_close(req: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        conn.sendall(f'{{"jsonrpc":"2.0","id":{req["id"]},"result":1}}\n'.encode())
        conn.shutdown(socket.SHUT_RDWR)
        closed.set()

    with serving(sock, answer_then_close) as srv, cc.Client(sock) as c:
        assert c.call("a") == 1
        assert closed.wait(10)
        assert c.call("b") == 1
        assert srv.connections == 2


def test_a_request_the_daemon_dropped_unread_is_sent_again(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def answer_then_drop_the_next(req: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        conn.sendall(f'{{"jsonrpc":"2.0","id":{req["id"]},"result":1}}\n'.encode())
        conn.recv(1, socket.MSG_PEEK)  # the next request has arrived...
        conn.close()  # ...and is dropped unread: the client sees a reset

    with serving(sock, answer_then_drop_the_next) as srv, cc.Client(sock) as c:
        assert c.call("a") == 1
        assert c.call("b") == 1
        assert [r["method"] for r in srv.requests] == ["a", "b"]
        assert srv.connections == 2


def test_silence_times_out(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    with (
        serving(sock, lambda req, fds, conn: None),
        cc.Client(sock, timeout=0.3) as c,
        pytest.raises(cc.DaemonTimeout, match="silent"),
    ):
        c.call("m", {})


def test_a_stream_that_keeps_moving_never_times_out(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def slow(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        for _ in range(6):  # 1.2 s in all, never 0.5 s silent
            os.write(fds[0], b"x" * 1000)
            time.sleep(0.2)
        os.close(fds.pop())
        return result(req, {"size": 6000})

    out = io.BytesIO()
    with serving(sock, slow), cc.Client(sock, timeout=0.5) as c:
        assert c.load("m", "models", out)["size"] == 6000
    assert len(out.getvalue()) == 6000


def test_calls_from_several_threads_are_serialised(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    with (
        serving(sock, lambda req, fds, conn: result(req, req["params"])) as srv,
        cc.Client(sock) as c,
    ):
        got: list[Any] = []

        def work(i: int) -> None:
            got.extend(c.call("echo", {"i": i, "j": j})["i"] == i for j in range(50))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == [True] * 400
    assert srv.connections == 1


def test_missing_socket_and_refused_connection_say_which(tmp_path: Path) -> None:
    with pytest.raises(cc.DaemonUnavailable, match="no socket at") as info:
        cc.Client(tmp_path / "absent").call("health", {})
    assert info.value.code is None
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale"))
    stale.close()  # a socket file nobody listens on
    with pytest.raises(cc.DaemonUnavailable, match="connection refused"):
        cc.Client(tmp_path / "stale").call("health", {})
    (tmp_path / "file").write_text("")
    with pytest.raises(cc.DaemonUnavailable):
        cc.Client(tmp_path / "file").call("health", {})


@pytest.mark.root
def test_permission_denied_says_so(tmp_path: Path) -> None:
    # Root passes every permission check, so a child drops to nobody first.
    sock = tmp_path / "s"
    tmp_path.chmod(0o755)
    code = (
        "import os, sys; from coffer.client import Client, DaemonUnavailable\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try: Client(sys.argv[1]).call('health', {})\n"
        "except DaemonUnavailable as e: print(e)\n"
    )
    with serving(sock, lambda req, fds, conn: result(req, {})):
        sock.chmod(0o600)
        out = subprocess.run(
            [sys.executable, "-c", code, str(sock)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    assert "permission denied" in out


def test_socket_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFER_SOCKET", str(tmp_path / "env.sock"))
    assert cc.Client().socket_path == str(tmp_path / "env.sock")
    assert cc.Client(tmp_path / "arg.sock").socket_path == str(tmp_path / "arg.sock")
    monkeypatch.delenv("COFFER_SOCKET")
    assert cc.Client().socket_path == "/run/coffer/cofferd.sock"


def test_oversized_request_is_refused_before_sending(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    with serving(sock, lambda req, fds, conn: result(req, {})) as srv, cc.Client(sock) as c:
        with pytest.raises(cc.TooLarge, match="line limit"):
            c.call("upload", {"data": "A" * MAX_LINE_BYTES})
        assert srv.requests == []
        with pytest.raises(ValueError, match="at most 1"):
            c.call("load", {}, fds=[0, 1])


def _write_fd(payload: bytes, size: int | None = None) -> Any:
    def handler(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        (fd,) = fds
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(payload)
        os.close(fd)
        fds.clear()
        n = len(payload) if size is None else size
        return result(req, {"folder": "models", "filename": "m", "version": 1, "size": n})

    return handler


def test_load_drains_the_pipe_and_reports_progress(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    payload = os.urandom(3 * 1024 * 1024 + 5)
    seen: list[tuple[int, int | None]] = []
    out = io.BytesIO()
    with serving(sock, _write_fd(payload)) as srv, cc.Client(sock) as c:
        r = c.load("m", "models", out, progress=lambda d, t: seen.append((d, t)))
    assert out.getvalue() == payload
    assert r["size"] == len(payload)
    assert srv.requests[0]["params"] == {"filename": "m", "folder": "models"}
    assert seen[-1] == (len(payload), None)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_load_into_a_raw_file_that_takes_little_at_a_time(tmp_path: Path) -> None:
    class Sip(io.RawIOBase):
        def __init__(self) -> None:
            self.got = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.got += bytes(b[:1000])
            return min(len(b), 1000)

    sock = tmp_path / "s"
    payload = os.urandom(100_000)
    out = Sip()
    with serving(sock, _write_fd(payload)), cc.Client(sock) as c:
        c.load("m", "models", out)  # type: ignore[arg-type]
    assert bytes(out.got) == payload


def test_load_short_of_the_reported_size_is_an_error(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    with (
        serving(sock, _write_fd(b"abc", size=4)),
        cc.Client(sock) as c,
        pytest.raises(cc.ProtocolError, match="reported 4 bytes but sent 3"),
    ):
        c.load("m", "models", io.BytesIO())


def test_load_error_after_partial_data(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def partial(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        os.write(fds[0], b"half")
        return error(req, ErrorCode.UPSTREAM_BAD_DATA, "corrupt")

    with serving(sock, partial), cc.Client(sock) as c, pytest.raises(cc.UpstreamBadData):
        c.load("m", "models", io.BytesIO())


def test_a_failing_output_stops_the_load_and_raises_its_error(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raise OSError(28, "No space left on device")

    big = _write_fd(os.urandom(4 * 1024 * 1024))

    def write_or_fail(req: dict[str, Any], fds: list[int], conn: socket.socket) -> Any:
        if req["method"] == "ping":
            return result(req, "pong")
        try:
            return big(req, fds, conn)
        except BrokenPipeError:
            return error(req, ErrorCode.SHUTTING_DOWN, "peer went away")

    with serving(sock, write_or_fail), cc.Client(sock) as c:
        with pytest.raises(OSError, match="No space"):
            c.load("m", "models", Full())  # type: ignore[arg-type]
        assert c.call("ping") == "pong"  # the client is still usable


def _read_fd(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
    with os.fdopen(os.dup(fds[0]), "rb") as f:
        data = f.read()
    params = req["params"]
    if "size" in params and params["size"] != len(data):
        return error(req, ErrorCode.BAD_REQUEST, "size mismatch")
    return result(req, {"status": "ok", "size": len(data), "sha": hash(data)})


def test_upload_pumps_a_file_and_sends_its_size(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(b"xx" + data)
    seen: list[tuple[int, int | None]] = []
    with serving(sock, _read_fd) as srv, cc.Client(sock) as c, (tmp_path / "f").open("rb") as f:
        f.read(2)  # the size counts from the current position
        r = c.upload("m", "models", f, progress=lambda d, t: seen.append((d, t)))
    assert r == {"status": "ok", "size": len(data), "sha": hash(data)}
    assert srv.requests[0]["params"] == {"filename": "m", "folder": "models", "size": len(data)}
    assert seen[-1] == (len(data), len(data))


def test_upload_from_a_pipe_sends_no_size(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    r, w = os.pipe()
    os.write(w, b"hello")
    os.close(w)
    with serving(sock, _read_fd) as srv, cc.Client(sock) as c, os.fdopen(r, "rb") as src:
        assert c.upload("m", "f", src)["size"] == 5
    assert "size" not in srv.requests[0]["params"]


def test_upload_stops_at_an_early_error(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def refuse(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        return error(req, ErrorCode.BAD_REQUEST, "invalid name")

    endless = io.BufferedReader(_Endless())  # type: ignore[arg-type]
    with serving(sock, refuse), cc.Client(sock) as c, pytest.raises(cc.BadRequest):
        c.upload("../x", "models", endless)  # type: ignore[arg-type]


class _Endless(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        b[:] = b"\0" * len(b)
        return len(b)


def test_inline_load_and_upload(tmp_path: Path) -> None:
    sock = tmp_path / "s"

    def inline(req: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        if req["method"] == "load":
            return result(req, {"size": 3, "data": "YWJj"})
        return result(req, {"status": "ok", "got": req["params"]["data"]})

    with serving(sock, inline), cc.Client(sock) as c:
        assert c.load_bytes("m") == b"abc"
        assert c.upload_bytes("m", "models", b"abc")["got"] == "YWJj"


def test_importing_the_library_loads_no_daemon_dependency() -> None:
    code = (
        "import sys, coffer.client, coffer.cli\n"
        "heavy = {'requests', 'cryptography', 'jsonrpcserver', 'docker', 'sdnotify'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_503_with_a_null_id_is_the_upstream_not_busy(tmp_path: Path) -> None:
    sock = tmp_path / "s"
    down = {"code": 503, "message": "Upstream unavailable", "data": {"detail": "down"}}
    line = json.dumps({"jsonrpc": "2.0", "id": None, "error": down}).encode() + b"\n"
    with (
        serving(sock, lambda req, fds, conn: line),
        cc.Client(sock) as c,
        pytest.raises(cc.UpstreamUnavailable),
    ):
        c.call("m", {})
