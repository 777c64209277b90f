"""Never a 5xx for bad input: a battery of malformed requests, each a clear 4xx.

All run against one server; its teardown fails if it logged a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Callable

import pytest
import requests

from fixtures.upstream import Upstream

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)

GOOD_COMMIT = {
    "small": base64.b64encode(b"s" * 40).decode(),
    "key": base64.b64encode(bytes(32)).decode(),
    "big_size": 0,
    "big_sha256": "0" * 64,
    "plaintext_size": 0,
}


def commit_with(**changes: object) -> dict[str, object]:
    body = dict(GOOD_COMMIT)
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


BAD_COMMITS = [
    commit_with(small=...),
    commit_with(key=...),
    commit_with(big_size=...),
    commit_with(big_sha256=...),
    commit_with(plaintext_size=...),
    commit_with(big_size=-1),
    commit_with(big_size=True),
    commit_with(big_size=1.0),
    commit_with(big_size="1"),
    commit_with(big_size=2**63),
    commit_with(plaintext_size=None),
    commit_with(big_sha256="0" * 63),
    commit_with(big_sha256="g" * 64),
    commit_with(big_sha256=["0" * 64]),
    commit_with(small="not base64!"),
    commit_with(small="QQ"),
    commit_with(small="QQ==\n"),
    commit_with(small=17),
    commit_with(key=base64.b64encode(bytes(16)).decode()),
    commit_with(key=""),
]

RAW_BODIES = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"\xff\xfe{}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"big_size": ' + b"9" * 5000 + b"}",
    b'{"a": NaN}',
]


@pytest.fixture(scope="module")
def commit_url(upstream_module: Upstream) -> str:
    response = requests.post(
        f"{upstream_module.url}/v1/resources/models/m/uploads",
        json={},
        headers=upstream_module.auth(upstream_module.publisher),
        timeout=30,
    )
    return (
        f"{upstream_module.url}/v1/resources/models/m/uploads/{response.json()['upload_id']}/commit"
    )


def assert_clear_4xx(response: requests.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("body", BAD_COMMITS)
def test_bad_commit_fields_are_400(
    upstream_module: Upstream, commit_url: str, body: dict[str, object]
) -> None:
    headers = upstream_module.auth(upstream_module.publisher)
    assert_clear_4xx(requests.post(commit_url, json=body, headers=headers, timeout=30))


@pytest.mark.parametrize("raw", RAW_BODIES)
def test_bad_json_is_400(upstream_module: Upstream, commit_url: str, raw: bytes) -> None:
    headers = {
        **upstream_module.auth(upstream_module.publisher),
        "Content-Type": "application/json",
    }
    assert_clear_4xx(requests.post(commit_url, data=raw, headers=headers, timeout=30))
    login = requests.post(f"{upstream_module.url}/v1/login", data=raw, headers=headers, timeout=30)
    assert_clear_4xx(login)


def test_a_json_body_over_the_cap_is_413(upstream_module: Upstream, commit_url: str) -> None:
    headers = upstream_module.auth(upstream_module.publisher)
    # A commit's cap is 4 MiB (it may carry a segment manifest), others' 1 MiB.
    big = json.dumps(commit_with(small=base64.b64encode(bytes(3 * 1024 * 1024)).decode()))
    assert_clear_4xx(requests.post(commit_url, data=big, headers=headers, timeout=30), 413)
    chunked = iter([big[:1000].encode(), big[1000:].encode()])
    assert_clear_4xx(requests.post(commit_url, data=chunked, headers=headers, timeout=30), 413)
    login = json.dumps({"email": "a@example.com", "password": "x" * (1024 * 1024)})
    answer = requests.post(f"{upstream_module.url}/v1/login", data=login, timeout=30)
    assert_clear_4xx(answer, 413)


def test_unknown_paths_are_404_and_wrong_methods_405(upstream_module: Upstream) -> None:
    for path in ["/", "/v1", "/v2/login", "/v1/resources", "/v1/resources/a/b/c", "/cdn"]:
        assert_clear_4xx(requests.get(upstream_module.url + path, timeout=30), 404)
    wrong = requests.delete(f"{upstream_module.url}/v1/archives/a/key", timeout=30)
    assert_clear_4xx(wrong, 405)
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT"}
    assert_clear_4xx(requests.get(f"{upstream_module.url}/v1/login", timeout=30), 405)


def parse(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``answer``, in order."""
    out = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        answer = rest[length:]
    return out


H = b"Host: upstream\r\n"

#: Broken HTTP: uvicorn (h11) answers these itself, 400 and the connection closed.
#: (Headers past h11_max_incomplete_event_size while still incomplete: a request
#: whose head arrives whole in one read may be a little larger.)
FRAMING_CASES = [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112 3.2)
    b"GET /health HTTP/1.1\r\n" + H + b"X: " + b"x" * 1_000_000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + H + (b"X: " + b"y" * 100 + b"\r\n") * 10_000 + b"\r\n",
    b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /v1/login HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    b"POST /v1/login HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n",
    # Both framings: chunked wins (RFC 9112 6.3), so "{}" is a bad chunk size.
    b"POST /v1/login HTTP/1.1\r\n"
    + H
    + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\n",
    b"POST /v1/login HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/login HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"f" * 2000
    + b"\r\n",
    b"GET /v1/resources/a\x00b/m HTTP/1.1\r\n" + H + b"\r\n",
]


def app_cases(token: str) -> list[bytes]:
    """Well-framed requests the app refuses: a JSON 4xx each."""
    auth = f"Authorization: Bearer {token}\r\n".encode() + H
    return [
        b"GET /v1/resources/%ZZ/m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /v1/resources/%FF/m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /v1/resources/../m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /v1/resources/./m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /v1/resources/a%00b/m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /v1/resources/a%2Fb/m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET http://127.0.0.1/v1/resources/%2E%2E/m HTTP/1.1\r\n" + auth + b"\r\n",
        b"GET /cdn/x?"
        + b"&".join(b"k%d=v" % i for i in range(100))
        + b" HTTP/1.1\r\n"
        + H
        + b"\r\n",
        b"POST /v1/login HTTP/1.1\r\n" + H + b"Content-Length: 99999999999\r\n\r\n",
        b"GET / HTTP/9.9\r\n" + H + b"\r\n",
        b"BREW /health HTTP/1.1\r\n" + H + b"\r\n",
        b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    ]


def test_broken_http_gets_a_400_and_a_closed_connection(upstream_module: Upstream) -> None:
    # The client decides on the status: a plain-text 400 is still a 400.
    for case in FRAMING_CASES:
        answer = upstream_module.raw(case)
        assert answer.startswith(b"HTTP/1.1 400 "), (case[:80], answer[:300])
        assert b"\r\nconnection: close\r\n" in answer.lower(), case[:80]
    assert requests.get(f"{upstream_module.url}/health", timeout=30).ok


def test_malformed_requests_get_a_json_4xx(upstream_module: Upstream) -> None:
    token = upstream_module.login(upstream_module.reader)
    for case in app_cases(token):
        answer = upstream_module.raw(case)
        responses = parse(answer)
        assert responses, case[:80]
        status, headers, body = responses[0]
        assert 400 <= status < 500, (case[:80], answer[:300])
        assert headers["content-type"] == "application/json", case[:80]
        assert isinstance(json.loads(body)["detail"], str)
    assert requests.get(f"{upstream_module.url}/health", timeout=30).ok


def test_keep_alive_survives_an_error_with_a_small_body(upstream_module: Upstream) -> None:
    bad_login = b"POST /v1/login HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\n[1,2]"
    unread = b"GET /v1/resources/a/b HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"
    health = b"GET /health HTTP/1.1\r\n" + H + b"\r\n"
    responses = parse(upstream_module.raw(bad_login + unread + health + health))
    assert [status for status, _, _ in responses] == [400, 401, 200, 200]
    assert json.loads(responses[-1][2]) == {"status": "ok"}


def test_a_slow_or_silent_request_head_is_dropped(
    upstream_factory: Callable[..., Upstream],
) -> None:
    upstream = upstream_factory(idle_timeout=1.0)
    started = time.monotonic()
    with (
        socket.create_connection(("127.0.0.1", upstream.port), timeout=10) as silent,
        socket.create_connection(("127.0.0.1", upstream.port), timeout=10) as slow,
    ):
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - started > 6:
                break
        # Both were closed by the server after about a second, not answered.
        assert silent.recv(100) == b""
        with contextlib.suppress(ConnectionResetError):
            assert slow.recv(100) == b""
        closed_at = time.monotonic() - started
    assert closed_at < 6
    # A prompt client on a kept-alive connection still gets its answers.
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{upstream.url}/health", timeout=10).ok
            time.sleep(0.3)
