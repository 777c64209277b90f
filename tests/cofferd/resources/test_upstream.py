"""The API client's own logic against a scripted HTTP server: retries, re-login, resume."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
import traceback

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scripted_http import Reply, ScriptedServer, Seen, sequence

from cofferd.errors import (
    BadName,
    BadRequest,
    Conflict,
    CorruptData,
    NotFound,
    Unauthorized,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from cofferd.resources.upstream import MAX_PART_SIZE, ApiClient, DeviceCredential, RetryPolicy
from fixtures.upstream import Upstream

KEY = bytes(range(32))
BIG = bytes(range(256)) * 4096 * 4  # 4 MiB


def token_reply(n: int = 1, expires_in: int = 3600) -> Reply:
    return Reply(200, {"access_token": f"tok{n}", "token_type": "bearer", "expires_in": expires_in})


def resource_body(server: ScriptedServer, folder: str = "models", name: str = "m.bin") -> dict:
    return {
        "folder": folder,
        "name": name,
        "version": 3,
        "small": base64.b64encode(b"s" * 40).decode(),
        "key": base64.b64encode(KEY).decode(),
        "big_url": f"{server.url}/cdn/blob1?expires=9&sig=ab",
        "big_size": len(BIG),
        "big_sha256": hashlib.sha256(BIG).hexdigest(),
        "plaintext_size": 10,
    }


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(server: ScriptedServer, sleeps: Sleeps, **kw: object) -> ApiClient:
    return ApiClient(
        server.url,
        timeout=kw.pop("timeout", 5.0),  # type: ignore[arg-type]
        retry=RetryPolicy(retries=3, base_delay=0.1, max_delay=0.3),
        sleep=sleeps,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(scripted: ScriptedServer, sleeps: Sleeps) -> ApiClient:
    scripted.routes["POST /v1/login"] = lambda _: token_reply()
    c = make_client(scripted, sleeps)
    c.login("reader@example.com", "pw")
    yield c
    c.close()


def test_no_credentials_refuses_before_any_request(scripted: ScriptedServer, sleeps: Sleeps):
    c = make_client(scripted, sleeps)
    assert not c.authenticated
    with pytest.raises(Unauthorized, match="log in first"):
        c.get_resource("models", "m.bin")
    assert scripted.seen == []


def test_login_checks_credentials_at_once(scripted: ScriptedServer, sleeps: Sleeps):
    refusal = Reply(401, {"detail": "invalid email or password"})
    scripted.routes["POST /v1/login"] = lambda _: refusal
    c = make_client(scripted, sleeps)
    with pytest.raises(Unauthorized) as info:
        c.login("reader@example.com", "hunter2-secret")
    assert "hunter2-secret" not in str(info.value)
    assert not c.authenticated
    assert scripted.count("POST", "/v1/login") == 1


def test_login_rate_limited_says_when(scripted: ScriptedServer, sleeps: Sleeps):
    scripted.routes["POST /v1/login"] = lambda _: Reply(
        429, {"detail": "too many"}, headers={"Retry-After": "17"}
    )
    c = make_client(scripted, sleeps)
    with pytest.raises(Unauthorized, match="retry after 17 s"):
        c.login("a@example.com", "pw")
    assert sleeps.calls == []  # a refusal is not retried


def test_login_bad_request_and_server_errors(scripted: ScriptedServer, sleeps: Sleeps):
    scripted.routes["POST /v1/login"] = sequence(
        Reply(400, {"detail": "email must be a string"}), Reply(503, {"detail": "busy"})
    )
    c = make_client(scripted, sleeps)
    with pytest.raises(BadRequest, match="email must be a string"):
        c.login("", "pw")
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        c.login("a@example.com", "pw")
    assert sleeps.calls == []  # a login is a POST: not repeated after it was sent
    c.close()


def test_bearer_token_sent_to_api(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(200, resource_body(scripted))
    info = client.get_resource("models", "m.bin")
    assert info.version == 3
    assert info.key == KEY
    assert "tok1" not in repr(info)
    assert KEY.hex() not in repr(info)
    get = next(s for s in scripted.seen if s.method == "GET")
    assert get.headers["Authorization"] == "Bearer tok1"


def test_401_logs_in_again_once_then_succeeds(scripted: ScriptedServer, sleeps: Sleeps):
    logins = iter(range(1, 100))
    scripted.routes["POST /v1/login"] = lambda _: token_reply(next(logins))

    def resource(seen: Seen) -> Reply:
        if seen.headers.get("Authorization") == "Bearer tok1":
            return Reply(401, {"detail": "token expired"})
        return Reply(200, resource_body(scripted))

    scripted.routes["GET /v1/resources/"] = resource
    c = make_client(scripted, sleeps)
    c.login("a@example.com", "pw")
    assert c.get_resource("models", "m.bin").version == 3
    assert scripted.count("POST", "/v1/login") == 2
    assert scripted.count("GET", "/v1/resources/") == 2


def test_401_twice_is_unauthorized(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(401, {"detail": "no"})
    with pytest.raises(Unauthorized):
        client.get_resource("models", "m.bin")
    assert scripted.count("GET", "/v1/resources/") == 2
    assert scripted.count("POST", "/v1/login") == 2


def test_expired_token_renewed_before_the_call(scripted: ScriptedServer, sleeps: Sleeps):
    now = [1000.0]
    logins = iter(range(1, 100))
    scripted.routes["POST /v1/login"] = lambda _: token_reply(next(logins), expires_in=60)
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(200, resource_body(scripted))
    c = make_client(scripted, sleeps, clock=lambda: now[0])
    c.login("a@example.com", "pw")
    c.get_resource("models", "m.bin")
    now[0] += 61
    c.get_resource("models", "m.bin")
    auths = [s.headers["Authorization"] for s in scripted.seen if s.method == "GET"]
    assert auths == ["Bearer tok1", "Bearer tok2"]


def test_many_threads_with_an_expired_token_log_in_once(scripted: ScriptedServer, sleeps: Sleeps):
    now = [1000.0]
    logins = iter(range(1, 100))
    scripted.routes["POST /v1/login"] = lambda _: token_reply(next(logins), expires_in=60)
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(200, resource_body(scripted))
    c = make_client(scripted, sleeps, clock=lambda: now[0])
    c.login("a@example.com", "pw")
    now[0] += 100
    errors: list[BaseException] = []

    def work() -> None:
        try:
            c.get_resource("models", "m.bin")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert scripted.count("POST", "/v1/login") == 2


def test_a_login_turned_away_busy_is_sent_again(scripted: ScriptedServer, sleeps: Sleeps):
    # 503 with Retry-After: the upstream's hash pool was full and the login
    # was not processed; it is sent again within the retry bound.
    busy = Reply(503, {"detail": "too many logins"}, headers={"Retry-After": "1"})
    scripted.routes["POST /v1/login"] = sequence(busy, busy, token_reply())
    c = make_client(scripted, sleeps)
    c.login("reader@example.com", "pw")
    assert c.authenticated
    assert scripted.count("POST", "/v1/login") == 3
    assert sleeps.calls == [0.3, 0.3]  # Retry-After, within max_delay
    c.close()


def test_a_login_turned_away_for_good_gives_up(scripted: ScriptedServer, sleeps: Sleeps):
    busy = Reply(503, {"detail": "too many logins"}, headers={"Retry-After": "1"})
    scripted.routes["POST /v1/login"] = lambda _: busy
    c = make_client(scripted, sleeps)
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        c.login("reader@example.com", "pw")
    assert scripted.count("POST", "/v1/login") == 4
    c.close()


def test_get_retried_on_5xx_with_backoff(scripted: ScriptedServer, client: ApiClient, sleeps):
    scripted.routes["GET /v1/resources/"] = sequence(
        Reply(503, {"detail": "busy"}), Reply(502, {}), Reply(200, resource_body(scripted))
    )
    assert client.get_resource("models", "m.bin").big_size == len(BIG)
    assert sleeps.calls == [0.1, 0.2]


def test_retry_after_heeded_within_the_bound(scripted: ScriptedServer, client: ApiClient, sleeps):
    busy = Reply(503, {"detail": "busy"}, headers={"Retry-After": "60"})
    scripted.routes["GET /v1/resources/"] = sequence(busy, Reply(200, resource_body(scripted)))
    client.get_resource("models", "m.bin")
    assert sleeps.calls == [0.3]  # 60 s asked, max_delay 0.3 s allowed


def test_get_gives_up_after_bounded_retries(scripted: ScriptedServer, client: ApiClient, sleeps):
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(500, {"detail": "boom"})
    with pytest.raises(UpstreamUnavailable, match="HTTP 500"):
        client.get_resource("models", "m.bin")
    assert scripted.count("GET", "/v1/resources/") == 4
    assert sleeps.calls == [0.1, 0.2, 0.3]


def test_post_not_retried_on_5xx(scripted: ScriptedServer, client: ApiClient, sleeps):
    scripted.routes["POST /v1/resources/"] = lambda _: Reply(503, {"detail": "busy"})
    with pytest.raises(UpstreamUnavailable):
        client.begin_upload("models", "m.bin")
    assert scripted.count("POST", "/v1/resources/") == 1
    assert sleeps.calls == []


def test_unreachable_upstream_is_unavailable_after_retries(sleeps: Sleeps):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ApiClient(f"http://127.0.0.1:{port}", timeout=2, retry=RetryPolicy(2, 0.1), sleep=sleeps)
    with pytest.raises(UpstreamUnavailable, match="cannot connect") as info:
        c.login("a@example.com", "pw")
    assert "pw" not in str(info.value).split(":")[-1]
    # A refused connection never reached the server, so even the POST is retried.
    assert sleeps.calls == [0.1, 0.2]
    c.close()


def test_timeout_is_unavailable(scripted: ScriptedServer, sleeps: Sleeps):
    scripted.routes["POST /v1/login"] = lambda _: Reply(200, {}, delay=1.0)
    c = make_client(scripted, sleeps, timeout=0.2)
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        c.login("a@example.com", "pw")
    assert scripted.count("POST", "/v1/login") == 1  # a POST that may have arrived: not repeated
    c.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFound), (403, Unauthorized), (409, Conflict), (418, UpstreamProtocolError)],
)
def test_statuses_map_to_errors(scripted: ScriptedServer, client: ApiClient, status, error):
    scripted.routes["GET /v1/archives/"] = lambda _: Reply(status, {"detail": "x\x00y"})
    with pytest.raises(error) as info:
        client.get_archive_key("images")
    assert "\x00" not in str(info.value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("key"),
        lambda b: b.update(key=base64.b64encode(b"short").decode()),
        lambda b: b.update(key="not base64!"),
        lambda b: b.update(version=0),
        lambda b: b.update(big_size=True),
        lambda b: b.update(big_sha256="zz"),
        lambda b: b.update(big_url="/relative"),
        lambda b: b.update(name="other.bin"),
    ],
)
def test_bad_answers_are_protocol_errors(scripted: ScriptedServer, client: ApiClient, mutate):
    body = resource_body(scripted)
    mutate(body)
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(200, body)
    with pytest.raises(UpstreamProtocolError):
        client.get_resource("models", "m.bin")


def test_non_json_answer_is_protocol_error(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["GET /v1/resources/"] = lambda _: Reply(200, b"<html>")
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        client.get_resource("models", "m.bin")


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("models", ".."),
        ("..", "m.bin"),
        ("models", "a/b"),
        ("models", "a\x00b"),
        ("models", "a\nb"),
        ("models", "a\x7f"),
        ("models/x", "m.bin"),
        ("", "m.bin"),
    ],
)
def test_bad_names_refused_before_any_request(
    scripted: ScriptedServer, client: ApiClient, folder: str, name: str
):
    before = len(scripted.seen)
    for call in (client.get_resource, client.begin_upload):
        with pytest.raises(BadName):
            call(folder, name)
    with pytest.raises(BadName):
        client.get_archive_key(name if folder == "models" else folder)
    assert len(scripted.seen) == before


def test_archive_key_put_created_then_same(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["PUT /v1/archives/"] = sequence(Reply(201, {}), Reply(200, {}))
    assert client.put_archive_key("images", KEY) is True
    assert client.put_archive_key("images", KEY) is False
    put = next(s for s in scripted.seen if s.method == "PUT")
    assert put.body == b'{"key": "' + base64.b64encode(KEY) + b'"}'


def test_cdn_gets_no_bearer_token_and_resumes_with_range(
    scripted: ScriptedServer, client: ApiClient, sleeps: Sleeps
):
    def cdn(seen: Seen) -> Reply:
        rng = seen.headers.get("Range")
        if rng is None:
            return Reply(200, BIG, cut_after=2_500_000)
        start = int(rng.removeprefix("bytes=").removesuffix("-"))
        return Reply(206, BIG[start:])

    scripted.routes["GET /cdn/"] = cdn
    url = f"{scripted.url}/cdn/blob1?expires=9&sig=ab"
    got = b"".join(client.iter_big(url, len(BIG)))
    assert got == BIG
    cdn_requests = [s for s in scripted.seen if s.path.startswith("/cdn/")]
    assert len(cdn_requests) == 2
    assert all("Authorization" not in s.headers for s in cdn_requests)
    assert all(s.headers["Accept-Encoding"] == "identity" for s in cdn_requests)
    resumed_at = int(cdn_requests[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 2_500_000
    assert len(sleeps.calls) == 1


def test_cdn_serving_too_much_is_corrupt(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["GET /cdn/"] = lambda _: Reply(200, BIG + b"x")
    with pytest.raises(CorruptData):
        b"".join(client.iter_big(f"{scripted.url}/cdn/b", len(BIG)))


def test_cdn_missing_blob_not_retried(scripted: ScriptedServer, client: ApiClient, sleeps):
    scripted.routes["GET /cdn/"] = lambda _: Reply(404, {"detail": "no"})
    with pytest.raises(UpstreamProtocolError, match="no such big part"):
        b"".join(client.iter_big(f"{scripted.url}/cdn/b", len(BIG)))
    assert sleeps.calls == []


def test_put_big_streams_chunked_without_token(scripted: ScriptedServer, client: ApiClient):
    def store(seen: Seen) -> Reply:
        return Reply(201, {"size": len(seen.body), "sha256": hashlib.sha256(seen.body).hexdigest()})

    scripted.routes["PUT /cdn/"] = store
    stored = client.put_big(f"{scripted.url}/cdn/b?sig=1", iter([b"ab", b"", b"cd"]))
    assert stored.size == 4
    assert stored.sha256 == hashlib.sha256(b"abcd").hexdigest()
    put = next(s for s in scripted.seen if s.method == "PUT")
    assert put.headers["Transfer-Encoding"] == "chunked"
    assert "Authorization" not in put.headers


def test_put_big_source_error_propagates_as_is(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["PUT /cdn/"] = lambda _: Reply(201, {"size": 0, "sha256": "0" * 64})

    def chunks():
        yield b"ab"
        raise CorruptData("source broke")

    with pytest.raises(CorruptData, match="source broke"):
        client.put_big(f"{scripted.url}/cdn/b", chunks())


def test_cdn_failure_tracebacks_do_not_quote_the_presigned_url(sleeps: Sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ApiClient("http://127.0.0.1:9", retry=RetryPolicy(1, 0.01), sleep=sleeps)
    url = f"http://127.0.0.1:{port}/cdn/b?expires=9&sig=SIGNATURE-SECRET"
    failures = []
    for call in (
        lambda: b"".join(client.iter_big(url, 10)),
        lambda: client.put_big(url, iter([b"x"])),
    ):
        with pytest.raises(UpstreamUnavailable) as info:
            call()
        failures.append("".join(traceback.format_exception(info.value)))
    assert all("SIGNATURE-SECRET" not in text for text in failures)
    client.close()


def test_empty_big_part_needs_no_request(scripted: ScriptedServer, client: ApiClient):
    before = len(scripted.seen)
    assert list(client.iter_big(f"{scripted.url}/cdn/b", 0)) == []
    assert len(scripted.seen) == before


def test_put_big_to_a_store_that_answers_no_body(scripted: ScriptedServer, client: ApiClient):
    # An S3 store answers a PUT with 200, an ETag and no body: the commit verifies.
    scripted.routes["PUT /bucket/"] = lambda _: Reply(200, b"", {"ETag": '"x"'})
    assert client.put_big(f"{scripted.url}/bucket/b?X-Amz-Signature=1", iter([b"ab"])) is None


def _parts_server(scripted: ScriptedServer, *replies: Reply) -> list[int]:
    """Part URLs asked for, in order; each PUT answered with ``replies`` in turn."""
    asked: list[int] = []
    scripted.routes["PUT /part/"] = sequence(*replies) if replies else lambda _: Reply(200, b"")
    return asked


def _url_for(scripted: ScriptedServer, asked: list[int]):
    def part_url(number: int) -> str:
        asked.append(number)
        return f"{scripted.url}/part/{number}?sig=SIGNATURE-SECRET"

    return part_url


@pytest.mark.parametrize(
    ("pieces", "sizes"),
    [
        ([], [0]),  # an empty big part is one empty part
        ([b"abc"], [3]),
        ([b"abcd"], [4]),  # exactly one part: no empty part after it
        ([b"ab", b"", b"cdefghi", b"j"], [4, 4, 2]),
        ([b"abcdefgh"], [4, 4]),
    ],
)
def test_put_parts_cuts_at_part_size_with_lengths(
    scripted: ScriptedServer, client: ApiClient, pieces: list[bytes], sizes: list[int]
):
    asked = _parts_server(scripted)
    count = client.put_parts(iter(pieces), 4, _url_for(scripted, asked))
    assert count == len(sizes)
    puts = [s for s in scripted.seen if s.method == "PUT"]
    assert [p.path.split("?")[0] for p in puts] == [f"/part/{n}" for n in range(1, count + 1)]
    assert [len(p.body) for p in puts] == sizes
    assert b"".join(p.body for p in puts) == b"".join(pieces)
    assert all(p.headers["Content-Length"] == str(len(p.body)) for p in puts)
    assert all("Authorization" not in p.headers for p in puts)


def test_a_failed_part_is_sent_again_with_a_fresh_url(
    scripted: ScriptedServer, client: ApiClient, sleeps: Sleeps
):
    asked = _parts_server(
        scripted, Reply(200, b""), Reply(503, b""), Reply(403, b"expired"), Reply(200, b"")
    )
    assert client.put_parts(iter([b"abcdefg"]), 4, _url_for(scripted, asked)) == 2
    assert asked == [1, 2, 2, 2]
    bodies = [s.body for s in scripted.seen if s.method == "PUT"]
    assert bodies == [b"abcd", b"efg", b"efg", b"efg"]
    assert len(sleeps.calls) == 2


def test_a_part_failing_every_time_gives_up_without_quoting_the_url(
    scripted: ScriptedServer, client: ApiClient, sleeps: Sleeps
):
    asked = _parts_server(scripted, Reply(500, b""))
    with pytest.raises(UpstreamUnavailable, match="part 1") as info:
        client.put_parts(iter([b"abc"]), 4, _url_for(scripted, asked))
    assert len(asked) == 4  # the first try and 3 retries
    assert "SIGNATURE-SECRET" not in "".join(traceback.format_exception(info.value))


def test_a_part_refused_for_good_is_not_retried(scripted: ScriptedServer, client: ApiClient):
    asked = _parts_server(scripted, Reply(404, b"NoSuchUpload"))
    with pytest.raises(UpstreamProtocolError, match="no such big part"):
        client.put_parts(iter([b"abc"]), 4, _url_for(scripted, asked))
    assert asked == [1]


def test_put_parts_source_error_propagates_before_its_part(
    scripted: ScriptedServer, client: ApiClient
):
    asked = _parts_server(scripted)

    def chunks():
        yield b"abcdef"
        raise CorruptData("source broke")

    with pytest.raises(CorruptData, match="source broke"):
        client.put_parts(chunks(), 4, _url_for(scripted, asked))
    assert asked == [1]  # the full first part went; the broken second did not


def test_put_parts_refuses_a_part_size_it_would_not_hold(
    scripted: ScriptedServer, client: ApiClient
):
    with pytest.raises(BadRequest, match="over"):
        client.put_parts(iter([b"x"]), MAX_PART_SIZE + 1, _url_for(scripted, []))
    assert not [s for s in scripted.seen if s.method == "PUT"]


def test_part_url_asks_the_upstream(scripted: ScriptedServer, client: ApiClient):
    scripted.routes["POST /v1/resources/models/m.bin/uploads/u1/parts"] = lambda _: Reply(
        200, {"url": "http://store.example/b/k?partNumber=2&X-Amz-Signature=s"}
    )
    url = client.part_url("models", "m.bin", "u1", 2)
    assert url == "http://store.example/b/k?partNumber=2&X-Amz-Signature=s"
    post = next(s for s in scripted.seen if s.path.endswith("/parts"))
    assert json.loads(post.body) == {"part_number": 2}
    assert post.headers["Authorization"] == "Bearer tok1"
    scripted.routes["POST /v1/resources/models/m.bin/uploads/u1/parts"] = lambda _: Reply(
        200, {"url": "/relative"}
    )
    with pytest.raises(UpstreamProtocolError, match="url"):
        client.part_url("models", "m.bin", "u1", 3)


@pytest.mark.parametrize(
    ("extra", "part_size"),
    [({}, None), ({"multipart": {"part_size": 5242880}}, 5242880)],
)
def test_begin_upload_reads_a_multipart_offer(
    scripted: ScriptedServer, client: ApiClient, extra: dict, part_size: int | None
):
    scripted.routes["POST /v1/resources/models/m.bin/uploads"] = lambda _: Reply(
        201, {"upload_id": "u1", "big_url": f"{scripted.url}/cdn/b", **extra}
    )
    ticket = client.begin_upload("models", "m.bin")
    assert (ticket.upload_id, ticket.part_size) == ("u1", part_size)


@pytest.mark.parametrize("offer", [5, [], {}, {"part_size": 0}, {"part_size": "5"}])
def test_a_bad_multipart_offer_is_a_protocol_error(
    scripted: ScriptedServer, client: ApiClient, offer: object
):
    scripted.routes["POST /v1/resources/models/m.bin/uploads"] = lambda _: Reply(
        201, {"upload_id": "u1", "big_url": f"{scripted.url}/cdn/b", "multipart": offer}
    )
    with pytest.raises(UpstreamProtocolError, match="multipart"):
        client.begin_upload("models", "m.bin")


# Refresh tokens, against the real reference upstream


def test_renewals_use_the_refresh_token_not_the_password(upstream: Upstream) -> None:
    now = [1_000.0]
    client = ApiClient(upstream.url, clock=lambda: now[0])
    try:
        client.login(upstream.reader.email, upstream.reader.password)
        for _ in range(3):
            now[0] += 10_000  # past the token's lifetime: each call renews first
            assert client.list_page("models") == ([], None)
        deadline = time.monotonic() + 5
        while "GET /v1/resources/models 200" not in upstream.log().split("POST /v1/token")[-1]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        log = upstream.log()
        assert log.count("POST /v1/login 200") == 1
        assert log.count("POST /v1/token 200") == 3
        # Disabled upstream: the refresh is refused, so is the password.
        assert upstream.admin("user", "disable", upstream.reader.email).returncode == 0
        now[0] += 10_000
        with pytest.raises(Unauthorized):
            client.list_page("models")
        # The server logs a request once answered: the line may come a moment later.
        deadline = time.monotonic() + 5
        while "POST /v1/login 401" not in upstream.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.log().count("POST /v1/login 401") == 1
    finally:
        client.close()


def test_a_refused_refresh_falls_back_to_the_password(upstream: Upstream) -> None:
    now = [1_000.0]
    client = ApiClient(upstream.url, clock=lambda: now[0])
    try:
        client.login(upstream.reader.email, upstream.reader.password)
        # A new password ends the refresh token; the client then logs in again.
        new = upstream.admin("user", "passwd", upstream.reader.email, stdin="second\n")
        assert new.returncode == 0
        client.login(upstream.reader.email, "second")
        assert (
            upstream.admin("user", "passwd", upstream.reader.email, stdin="second\n").returncode
            == 0
        )
        now[0] += 10_000
        assert client.list_page("models") == ([], None)
        deadline = time.monotonic() + 5
        while upstream.log().count("POST /v1/login 200") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        log = upstream.log()
        assert log.count("POST /v1/token 401") == 1
        assert log.count("POST /v1/login 200") == 3
    finally:
        client.close()


def test_a_device_logs_in_by_a_fresh_signed_assertion_and_signs_again_on_401(
    scripted: ScriptedServer, sleeps: Sleeps
):
    key = Ed25519PrivateKey.generate()
    device = DeviceCredential("d_test1", key)
    assertions: list[str] = []

    def token(seen: Seen) -> Reply:
        body = json.loads(seen.body)
        assert body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assertions.append(body["assertion"])
        return token_reply(len(assertions))

    def resource(seen: Seen) -> Reply:
        if seen.headers.get("Authorization") == "Bearer tok1":
            return Reply(401, {"detail": "token expired"})
        return Reply(200, resource_body(scripted))

    scripted.routes["POST /v1/token"] = token
    scripted.routes["GET /v1/resources/"] = resource
    c = make_client(scripted, sleeps, credential_source=lambda: device)
    assert c.subject == "device:d_test1"
    assert c.get_resource("models", "m.bin").version == 3
    assert c.authenticated
    assert scripted.count("POST", "/v1/login") == 0  # no password anywhere
    assert len(assertions) == 2  # the 401 made it sign again, once
    audience = f"{scripted.url}/v1/token"
    seen_jti = set()
    for assertion in assertions:
        assert jwt.get_unverified_header(assertion) == {
            "alg": "EdDSA",
            "typ": "JWT",
            "kid": "d_test1",
        }
        claims = jwt.decode(
            assertion,
            key.public_key(),
            algorithms=["EdDSA"],
            audience=audience,
            issuer="d_test1",
            options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"]},
        )
        assert claims["sub"] == "d_test1"
        assert claims["exp"] - claims["iat"] == 60
        assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) == 16
        seen_jti.add(claims["jti"])
        # Another key's signature does not verify: it is the device's own.
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(
                assertion,
                Ed25519PrivateKey.generate().public_key(),
                algorithms=["EdDSA"],
                audience=audience,
            )
    assert len(seen_jti) == 2
    assert "key=<hidden>" in repr(device)


def test_a_refused_device_login_is_unauthorized_with_the_reason(
    scripted: ScriptedServer, sleeps: Sleeps
):
    device = DeviceCredential("d_test2", Ed25519PrivateKey.generate())
    scripted.routes["POST /v1/token"] = lambda _: Reply(401, {"detail": "device revoked"})
    c = make_client(scripted, sleeps, credential_source=lambda: device)
    with pytest.raises(Unauthorized, match="device revoked"):
        c.get_resource("models", "m.bin")
    assert scripted.count("GET", "/v1/resources/") == 0
    assert not c.authenticated


def test_enroll_sends_the_key_and_keeps_no_token(scripted: ScriptedServer, sleeps: Sleeps):
    sent: list[dict[str, str]] = []

    def devices(seen: Seen) -> Reply:
        sent.append(json.loads(seen.body))
        assert "Authorization" not in seen.headers
        if len(sent) == 1:
            return Reply(201, {"device_id": "d_new", "role": "reader"})
        return Reply(401, {"detail": "enrollment token unknown, spent or expired"})

    scripted.routes["POST /v1/devices"] = devices
    c = make_client(scripted, sleeps)
    assert c.enroll("cet_secret", "cHVibGlj") == ("d_new", "reader")
    assert sent[0] == {"enrollment_token": "cet_secret", "public_key": "cHVibGlj"}
    with pytest.raises(Unauthorized, match="spent") as info:
        c.enroll("cet_secret", "cHVibGlj")
    assert "cet_secret" not in str(info.value)
    assert not c.authenticated
