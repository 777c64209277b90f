"""The line framing and the JSON-RPC envelope, against a real cofferd process."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable

import pytest

from coffer.protocol import MAX_LINE_BYTES, ErrorCode
from fixtures.daemon import CofferdProcess, read_response, rpc

NO_UPSTREAM = "http://127.0.0.1:9"


@pytest.fixture
def daemon(cofferd: Callable[..., CofferdProcess]) -> CofferdProcess:
    return cofferd(upstream_url=NO_UPSTREAM)


def send_line(sock: socket.socket, line: bytes) -> dict:
    sock.sendall(line + b"\n")
    return read_response(sock)


def error_of(response: dict) -> tuple[int, str]:
    err = response["error"]
    assert isinstance(err["data"]["detail"], str)
    assert err["data"]["detail"]
    return err["code"], err["message"]


def test_health_answers_on_a_socket_of_mode_0660(daemon: CofferdProcess) -> None:
    assert daemon.socket_path.stat().st_mode & 0o777 == 0o660
    response = daemon.call("health")
    assert response["result"]["status"] == "ok"
    assert response["result"]["version"]
    assert response["jsonrpc"] == "2.0"


def test_bad_lines_get_errors_and_the_connection_survives(daemon: CofferdProcess) -> None:
    cases = [
        (b"{not json", ErrorCode.PARSE_ERROR),
        (b"\xff\xfe", ErrorCode.PARSE_ERROR),
        (b"", ErrorCode.PARSE_ERROR),
        (b"[]", ErrorCode.INVALID_REQUEST),
        (b'[{"jsonrpc": "2.0", "method": "health", "id": 1}]', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc": "1.0", "method": "health", "id": 1}', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": 7, "id": 1}', ErrorCode.INVALID_REQUEST),
        (
            b'{"jsonrpc": "2.0", "method": "health", "params": [], "id": 1}',
            ErrorCode.INVALID_REQUEST,
        ),
        (b'{"jsonrpc": "2.0", "method": "health", "id": {}}', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "health", "id": 1, "x": 1}', ErrorCode.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "nope", "id": 1}', ErrorCode.METHOD_NOT_FOUND),
        (
            b'{"jsonrpc": "2.0", "method": "health", "params": {"x": 1}, "id": 1}',
            ErrorCode.INVALID_PARAMS,
        ),
        (b'{"jsonrpc": "2.0", "method": "load", "params": {}, "id": 1}', ErrorCode.INVALID_PARAMS),
        (
            b'{"jsonrpc": "2.0", "method": "login", "params": {"email": 1, "password": "x"},'
            b' "id": 1}',
            ErrorCode.INVALID_PARAMS,
        ),
    ]
    with daemon.connect() as sock:
        for line, code in cases:
            response = send_line(sock, line)
            assert error_of(response)[0] == code, line
        # Still the same connection, still serving.
        assert rpc(sock, "health")["result"]["status"] == "ok"


def test_wrong_params_name_the_problem(daemon: CofferdProcess) -> None:
    response = daemon.call("load", {"filename": "x", "colour": "red"})
    assert error_of(response) == (ErrorCode.INVALID_PARAMS, "Invalid params")
    assert "colour" in response["error"]["data"]["detail"]


def test_requests_on_one_connection_are_answered_in_order(daemon: CofferdProcess) -> None:
    lines = b"".join(
        json.dumps({"jsonrpc": "2.0", "method": "health", "id": f"r{i}"}).encode() + b"\n"
        for i in range(20)
    )
    with daemon.connect() as sock:
        sock.sendall(lines)
        buf = b""
        while buf.count(b"\n") < 20:
            buf += sock.recv(65536)
    ids = [json.loads(line)["id"] for line in buf.splitlines()]
    assert ids == [f"r{i}" for i in range(20)]


def test_a_notification_gets_no_response(daemon: CofferdProcess) -> None:
    with daemon.connect() as sock:
        sock.sendall(b'{"jsonrpc": "2.0", "method": "health"}\n')
        response = rpc(sock, "status")
    assert "authenticated" in response["result"]


def test_an_oversized_line_is_refused_and_the_connection_closed(daemon: CofferdProcess) -> None:
    with daemon.connect() as sock:
        chunk = b"x" * (1 << 20)
        # cofferd answers and closes once the line passes the limit, maybe mid-send.
        with contextlib.suppress(OSError):
            for _ in range(MAX_LINE_BYTES // len(chunk) + 2):
                sock.sendall(chunk)
        response = read_response(sock)
        assert error_of(response) == (ErrorCode.TOO_LARGE, "Too large")
        try:
            rest = sock.recv(1)
        except ConnectionResetError:  # closed with our excess bytes unread
            rest = b""
        assert rest == b""
    assert daemon.call("health")["result"]["status"] == "ok"
