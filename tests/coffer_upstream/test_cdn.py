"""The CDN: presigned GET (whole, Range, HEAD) and PUT, and what breaks a signature."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
import requests
from starlette.types import Message

from coffer_upstream.cdn import BlobResponse
from coffer_upstream.signing import Signer
from fixtures.upstream import Upstream

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)

BIG = bytes(range(256)) * 40  # 10240 bytes


def big_url(upstream: Upstream, folder: str = "models", name: str = "m") -> str:
    response = requests.get(
        f"{upstream.url}/v1/resources/{folder}/{name}",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )
    url: str = response.json()["big_url"]
    return url


@pytest.fixture(scope="module")
def published(upstream_module: Upstream) -> tuple[Upstream, str]:
    upstream_module.publish("cdn", "big", BIG)
    return upstream_module, big_url(upstream_module, "cdn", "big")


def test_get_serves_the_whole_blob(published: tuple[Upstream, str]) -> None:
    _, url = published
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["Content-Length"] == str(len(BIG))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-", 0, len(BIG)),
        ("bytes=1-", 1, len(BIG)),
        (f"bytes={len(BIG) - 1}-", len(BIG) - 1, len(BIG)),
        ("bytes=100-199", 100, 200),
        ("bytes=100-99999", 100, len(BIG)),
        ("bytes=-10", len(BIG) - 10, len(BIG)),
        ("bytes=-99999", 0, len(BIG)),
    ],
)
def test_range_gets_206_and_the_span(
    published: tuple[Upstream, str], header: str, start: int, end: int
) -> None:
    _, url = published
    response = requests.get(url, headers={"Range": header}, timeout=30)
    assert response.status_code == 206
    assert response.content == BIG[start:end]
    assert response.headers["Content-Length"] == str(end - start)
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(BIG)}"


@pytest.mark.parametrize(
    "header",
    [
        f"bytes={len(BIG)}-",
        "bytes=99999-",
        "bytes=5-2",
        "bytes=-0",
        "bytes=-",
        "bytes=abc-",
        "items=0-",
        "bytes=1e3-",
        "bytes=99999999999999999999-",
    ],
)
def test_bad_or_unsatisfiable_range_is_416(published: tuple[Upstream, str], header: str) -> None:
    _, url = published
    response = requests.get(url, headers={"Range": header}, timeout=30)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(BIG)}"
    assert "detail" in response.json()


def test_several_ranges_get_a_multipart_206(published: tuple[Upstream, str]) -> None:
    _, url = published
    response = requests.get(url, headers={"Range": "bytes=0-1,3-4"}, timeout=30)
    assert response.status_code == 206
    assert response.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert BIG[0:2] in response.content
    assert BIG[3:5] in response.content


def test_head_gives_headers_only(published: tuple[Upstream, str]) -> None:
    _, url = published
    response = requests.head(url, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(BIG))
    assert response.content == b""


def test_the_blob_on_disk_is_served_byte_for_byte(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"original")
    (blob,) = upstream.blob_paths()
    blob.write_bytes(b"tampered")
    assert requests.get(big_url(upstream), timeout=30).content == b"tampered"


def test_a_large_blob_from_an_offset(upstream: Upstream) -> None:
    big = os.urandom(24 * 1024 * 1024 + 3)
    upstream.publish("models", "large", big)
    url = big_url(upstream, "models", "large")
    offset = 16 * 1024 * 1024 + 1
    with requests.get(url, headers={"Range": f"bytes={offset}-"}, stream=True, timeout=60) as r:
        assert r.status_code == 206
        digest = hashlib.sha256()
        for chunk in r.iter_content(1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big[offset:]).hexdigest()


def test_a_blob_deleted_after_its_request_found_it_is_served_whole(tmp_path: Path) -> None:
    # The window between finding a blob and reading it, held open on purpose:
    # the response owns the open file, so the unlink does not cut it short.
    path = tmp_path / "blob"
    path.write_bytes(BIG)
    fds_before = len(os.listdir("/proc/self/fd"))
    response = BlobResponse.open(path, idle=10)
    path.unlink()
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "path": "/", "query_string": b""}
    anyio.run(response, scope, receive, send)
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == BIG
    assert len(os.listdir("/proc/self/fd")) == fds_before  # it let go of the file


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{text}"


def test_a_tampered_url_is_403(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    upstream.publish("models", "n", b"two")
    url = big_url(upstream, "models", "m")
    other = big_url(upstream, "models", "n")
    query = parse_qs(urlsplit(url).query)
    sig, expires = query["sig"][0], query["expires"][0]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    tampered = [
        _with_query(url, sig=flipped),
        _with_query(url, sig=sig.upper()),
        _with_query(url, sig=None),
        _with_query(url, expires=None),
        _with_query(url, expires=str(int(expires) + 1)),
        _with_query(url, expires="-1"),
        _with_query(url, expires="\uff11\uff12\uff13"),
        # One blob's signature on another blob.
        _with_query(other, sig=sig, expires=expires),
        url.split("?")[0],
    ]
    for bad in tampered:
        response = requests.get(bad, timeout=30)
        assert response.status_code == 403, bad
        assert "detail" in response.json()
    # A GET URL cannot PUT.
    assert requests.put(url, data=b"evil", timeout=30).status_code == 403
    assert requests.get(url, timeout=30).content == b"one"


def test_an_expired_url_is_403(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    url = big_url(upstream)
    blob_id = urlsplit(url).path.rsplit("/", 1)[1]
    # Signed with the server's own secret, an hour ago, for half an hour.
    secret = (upstream.data_dir / "secret").read_bytes()
    query = Signer(secret, clock=lambda: time.time() - 3600).url_query("GET", blob_id, 1800)
    response = requests.get(f"{upstream.url}/cdn/{blob_id}?{query}", timeout=30)
    assert response.status_code == 403
    assert response.json() == {"detail": "URL expired"}
    fresh = Signer(secret).url_query("GET", blob_id, 60)
    assert requests.get(f"{upstream.url}/cdn/{blob_id}?{fresh}", timeout=30).content == b"one"


def test_url_ttl_sets_the_expiry(upstream_factory: Callable[..., Upstream]) -> None:
    upstream = upstream_factory(url_ttl=2)
    upstream.publish("models", "m", b"one")
    url = big_url(upstream)
    assert requests.get(url, timeout=30).status_code == 200
    time.sleep(2.1)
    assert requests.get(url, timeout=30).status_code == 403


def test_a_signed_url_for_a_missing_blob_is_404(upstream: Upstream) -> None:
    secret = (upstream.data_dir / "secret").read_bytes()
    query = Signer(secret).url_query("GET", "f" * 32, 60)
    response = requests.get(f"{upstream.url}/cdn/{'f' * 32}?{query}", timeout=30)
    assert response.status_code == 404


def _begin(upstream: Upstream) -> dict[str, str]:
    response = requests.post(
        f"{upstream.url}/v1/resources/models/m/uploads",
        json={},
        headers=upstream.auth(upstream.publisher),
        timeout=30,
    )
    body: dict[str, str] = response.json()
    return body


def test_put_takes_a_chunked_body(upstream: Upstream) -> None:
    upload = _begin(upstream)
    parts = [os.urandom(100_000), b"", os.urandom(1), os.urandom(3_000_000)]
    response = requests.put(upload["big_url"], data=iter(parts), timeout=60)
    assert response.status_code == 201
    whole = b"".join(parts)
    assert response.json() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    (blob,) = upstream.blob_paths()
    assert blob.read_bytes() == whole


def _put_request(url: str, headers: str, body: bytes) -> bytes:
    target = url.split("/", 3)[3]
    return f"PUT /{target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


def test_put_without_length_is_411(upstream: Upstream) -> None:
    upload = _begin(upstream)
    answer = upstream.raw(_put_request(upload["big_url"], "", b""))
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert upstream.blob_paths() == []


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nxx\r\n0\r\n\r\n", b"2\r\nxxNO0\r\n\r\n"],
)
def test_a_malformed_chunked_put_is_400_and_stores_nothing(upstream: Upstream, body: bytes) -> None:
    upload = _begin(upstream)
    answer = upstream.raw(_put_request(upload["big_url"], "Transfer-Encoding: chunked\r\n", body))
    assert answer.startswith(b"HTTP/1.1 400 ")
    # The server answers its 400 as it reads the bad chunk; the PUT's temp
    # file, if one was begun, goes as the request's task ends, just after.
    deadline = time.monotonic() + 10
    while upstream.temp_paths() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        # The client stops before its Content-Length, or mid-chunk.
        ("Content-Length: 1000\r\n", b"x" * 10),
        ("Transfer-Encoding: chunked\r\n", b"10\r\nshort"),
        ("Transfer-Encoding: chunked\r\n", b"2\r\nxx\r\n"),
    ],
)
def test_a_put_cut_short_stores_nothing(upstream: Upstream, headers: str, body: bytes) -> None:
    upload = _begin(upstream)
    # The client hangs up (raw() closes the connection) with its body unfinished.
    upstream.raw(_put_request(upload["big_url"], headers, body))
    deadline = time.monotonic() + 10
    while "PUT /cdn/" not in upstream.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []


def test_a_put_whose_body_stalls_gets_408(upstream_factory: Callable[..., Upstream]) -> None:
    upstream = upstream_factory(idle_timeout=1.0)
    upload = _begin(upstream)
    request = _put_request(upload["big_url"], "Content-Length: 1000\r\n", b"x" * 10)
    started = time.monotonic()
    answer = upstream.raw(request, quiet=5.0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started < 4.5
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []


def test_a_client_hanging_up_mid_download_harms_nothing(upstream: Upstream) -> None:
    big = os.urandom(32 * 1024 * 1024)
    upstream.publish("models", "m", big)
    url = big_url(upstream)
    with requests.get(url, stream=True, timeout=30) as response:
        assert len(response.raw.read(1024 * 1024)) == 1024 * 1024
    # The server goes on serving (and its teardown finds no traceback).
    assert hashlib.sha256(requests.get(url, timeout=60).content).digest() == (
        hashlib.sha256(big).digest()
    )


def test_a_client_that_stops_reading_is_dropped(
    upstream_factory: Callable[..., Upstream],
) -> None:
    upstream = upstream_factory(idle_timeout=1.0)
    upstream.publish("models", "m", bytes(64 * 1024 * 1024))
    target = big_url(upstream).split("/", 3)[3]
    with socket.create_connection(("127.0.0.1", upstream.port)) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /{target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 20
        while "GET /cdn/" not in upstream.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Logged once the server gave up, short of the whole blob.
        line = next(x for x in upstream.log().splitlines() if "GET /cdn/" in x)
        assert int(line.split()[-2]) < 64 * 1024 * 1024
    assert requests.get(f"{upstream.url}/health", timeout=10).ok
