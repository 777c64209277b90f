"""Every method's success and error paths: cofferd as a process, the reference upstream real."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable

import pytest

from coffer.protocol import ErrorCode
from fixtures.daemon import CofferdProcess, load_via_pipe, rpc, upload_via_pipe
from fixtures.upstream import Upstream

SMALL = os.urandom(3 * 1024 * 1024 + 17)  # a few segments, and under the inline cap


@pytest.fixture
def daemon(cofferd: Callable[..., CofferdProcess]) -> CofferdProcess:
    return cofferd(env={"COFFER_INLINE_MAX_BYTES": str(4 * 1024 * 1024)})


@pytest.fixture
def publisher(daemon: CofferdProcess, upstream: Upstream) -> CofferdProcess:
    """The daemon, logged in as the upstream's publisher."""
    account = upstream.publisher
    response = daemon.call("login", {"email": account.email, "password": account.password})
    assert response["result"] == {"status": "ok"}
    return daemon


def code_of(response: dict) -> int:
    assert "result" not in response, response
    assert response["error"]["data"]["detail"]
    return int(response["error"]["code"])


def test_status_reports_auth_and_the_cache_dir(daemon: CofferdProcess, upstream: Upstream) -> None:
    before = daemon.call("status")["result"]
    assert before["authenticated"] is False
    assert before["model_cache_dir"] == daemon.env["COFFER_CACHE_DIR"]
    assert before["upstream_url"] == upstream.url
    assert before["unlock"]["state"] == "idle"
    account = upstream.reader
    assert daemon.call("login", {"email": account.email, "password": account.password})[
        "result"
    ] == {"status": "ok"}
    assert daemon.call("status")["result"]["authenticated"] is True


def test_login_refused_is_unauthorized_and_the_password_never_logged(
    daemon: CofferdProcess, upstream: Upstream
) -> None:
    wrong = "not-the-password-" + os.urandom(4).hex()
    response = daemon.call("login", {"email": upstream.reader.email, "password": wrong})
    assert code_of(response) == ErrorCode.UNAUTHORIZED
    assert wrong not in response["error"]["data"]["detail"]
    assert daemon.call("login", {"email": upstream.reader.email})["error"]["code"] == (
        ErrorCode.INVALID_PARAMS
    )
    assert daemon.call("status")["result"]["authenticated"] is False
    assert wrong not in daemon.stderr_text()


def test_load_before_login_is_unauthorized(daemon: CofferdProcess) -> None:
    assert code_of(daemon.call("load", {"filename": "model.bin"})) == ErrorCode.UNAUTHORIZED


def test_upload_then_load_through_pipes_and_inline(publisher: CofferdProcess) -> None:
    with publisher.connect() as sock:
        done = upload_via_pipe(sock, {"filename": "m.bin", "size": len(SMALL)}, SMALL)
        assert done["result"]["status"] == "ok"
        assert done["result"]["size"] == len(SMALL)
        assert done["result"]["folder"] == "models"
        version = done["result"]["version"]
        publisher.sign(done["result"])
        data, response = load_via_pipe(sock, {"filename": "m.bin"})
        assert data == SMALL
        assert response["result"] == {
            "folder": "models",
            "filename": "m.bin",
            "version": version,
            "size": len(SMALL),
            "from_cache": False,
        }
        inline = rpc(sock, "load", {"filename": "m.bin", "folder": "models"})["result"]
        assert base64.b64decode(inline["data"]) == SMALL
        assert inline["from_cache"] is True  # the first load kept the big part
        # Inline upload of a new version, no size given.
        payload = b"tiny"
        up = rpc(sock, "upload", {"filename": "m.bin", "data": base64.b64encode(payload).decode()})
        assert up["result"]["version"] > version
        publisher.sign(up["result"])
        assert base64.b64decode(rpc(sock, "load", {"filename": "m.bin"})["result"]["data"]) == (
            payload
        )


def test_empty_and_one_byte_resources(publisher: CofferdProcess) -> None:
    with publisher.connect() as sock:
        for name, content in (("empty", b""), ("one", b"\x00")):
            done = upload_via_pipe(sock, {"filename": name, "size": len(content)}, content)
            assert done["result"]["size"] == len(content)
            publisher.sign(done["result"])
            data, response = load_via_pipe(sock, {"filename": name})
            assert (data, response["result"]["size"]) == (content, len(content))


def test_load_errors(publisher: CofferdProcess, cofferd: Callable[..., CofferdProcess]) -> None:
    with publisher.connect() as sock:
        assert code_of(rpc(sock, "load", {"filename": "absent.bin"})) == ErrorCode.NOT_FOUND
        for bad in ("../etc/passwd", "a/b", ".hidden", "x\x00y", "", "é"):
            assert code_of(rpc(sock, "load", {"filename": bad})) == ErrorCode.BAD_REQUEST
        assert code_of(rpc(sock, "load", {"filename": "m", "folder": ".."})) == (
            ErrorCode.BAD_REQUEST
        )
        big = os.urandom(4 * 1024 * 1024 + 1)
        done = upload_via_pipe(sock, {"filename": "big.bin"}, big)
        assert done["result"]["status"] == "ok"
        publisher.sign(done["result"])
        over = rpc(sock, "load", {"filename": "big.bin"})
        assert code_of(over) == ErrorCode.TOO_LARGE
        assert "fd" in over["error"]["data"]["detail"]
        # An fd open for reading only cannot take the plaintext.
        with open(os.devnull, "rb") as ro:
            response = rpc(sock, "load", {"filename": "big.bin"}, fds=[ro.fileno()])
        assert code_of(response) == ErrorCode.BAD_REQUEST
        # Two fds: refused, both closed by cofferd.
        r, w = os.pipe()
        try:
            response = rpc(sock, "load", {"filename": "big.bin"}, fds=[w, w])
            assert code_of(response) == ErrorCode.BAD_REQUEST
        finally:
            os.close(w)
            with open(r, "rb") as pipe:
                assert pipe.read() == b""  # every copy of the write end is closed


def test_upload_errors_publish_nothing(publisher: CofferdProcess) -> None:
    with publisher.connect() as sock:
        short = upload_via_pipe(sock, {"filename": "short.bin", "size": 1000}, b"x" * 999)
        assert code_of(short) == ErrorCode.BAD_REQUEST
        assert "999" in short["error"]["data"]["detail"]
        long = upload_via_pipe(sock, {"filename": "short.bin", "size": 10}, b"x" * 11)
        assert code_of(long) == ErrorCode.BAD_REQUEST
        assert code_of(rpc(sock, "load", {"filename": "short.bin"})) == ErrorCode.NOT_FOUND

        cap = 4 * 1024 * 1024
        too_big = base64.b64encode(b"x" * (cap + 1)).decode()
        assert code_of(rpc(sock, "upload", {"filename": "i", "data": too_big})) == (
            ErrorCode.TOO_LARGE
        )
        cases = [
            ({"filename": "i"}, ErrorCode.BAD_REQUEST),  # neither fd nor data
            ({"filename": "i", "data": "not base64!"}, ErrorCode.INVALID_PARAMS),
            ({"filename": "i", "data": 5}, ErrorCode.INVALID_PARAMS),
            ({"filename": "i", "data": "eA==", "size": 2}, ErrorCode.BAD_REQUEST),
            ({"filename": "i", "data": "eA==", "size": -1}, ErrorCode.INVALID_PARAMS),
            ({"filename": "i", "data": "eA==", "size": True}, ErrorCode.INVALID_PARAMS),
            ({"filename": "a/b", "data": "eA=="}, ErrorCode.BAD_REQUEST),
        ]
        for params, code in cases:
            assert code_of(rpc(sock, "upload", params)) == code, params
        r, w = os.pipe()
        os.close(w)
        try:
            both = rpc(sock, "upload", {"filename": "i", "data": "eA=="}, fds=[r])
        finally:
            os.close(r)
        assert code_of(both) == ErrorCode.BAD_REQUEST
        assert code_of(rpc(sock, "load", {"filename": "i"})) == ErrorCode.NOT_FOUND


def test_a_reader_cannot_publish(daemon: CofferdProcess, upstream: Upstream) -> None:
    account = upstream.reader
    daemon.call("login", {"email": account.email, "password": account.password})
    with daemon.connect() as sock:
        response = upload_via_pipe(sock, {"filename": "r.bin"}, b"data")
    assert code_of(response) == ErrorCode.UNAUTHORIZED
    assert "may not" in response["error"]["data"]["detail"]


def test_upstream_down_is_unavailable(publisher: CofferdProcess, upstream: Upstream) -> None:
    upstream.stop()
    try:
        response = publisher.call("load", {"filename": "m.bin"})
        assert code_of(response) == ErrorCode.UPSTREAM_UNAVAILABLE
    finally:
        upstream.start()
    assert publisher.call("health")["result"]["status"] == "ok"


def test_a_socket_fd_is_not_a_path_the_daemon_opens(publisher: CofferdProcess) -> None:
    """load writes into whatever fd came, here one end of a socketpair."""
    with publisher.connect() as sock:
        publisher.sign(upload_via_pipe(sock, {"filename": "s.bin"}, b"payload")["result"])
        a, b = socket.socketpair()
        with a, b:
            response = rpc(sock, "load", {"filename": "s.bin"}, fds=[a.fileno()])
            assert response["result"]["size"] == 7
            assert b.recv(100) == b"payload"
