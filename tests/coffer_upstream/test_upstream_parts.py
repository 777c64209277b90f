"""The pure parts of the reference upstream, with time and input injected."""

from __future__ import annotations

import io
import threading
import time
from email.message import Message

import pytest

from coffer_upstream.bodies import Body
from coffer_upstream.cdn import parse_range
from coffer_upstream.errors import HttpError
from coffer_upstream.passwords import DUMMY_HASH, hash_password, verify_password
from coffer_upstream.ratelimit import LoginLimiter
from coffer_upstream.signing import Signer

SECRET = bytes(range(32))


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Tokens and URL signatures


def test_token_round_trip_and_expiry() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock)
    token = signer.issue_token("a@b.c", "reader", 60)
    claims = signer.check_token(token)
    assert (claims.email, claims.role, claims.expires) == ("a@b.c", "reader", 1_000_060)
    clock.now += 60
    with pytest.raises(HttpError) as expired:
        signer.check_token(token)
    assert (expired.value.status, expired.value.detail) == (401, "token expired")


def test_a_token_of_another_secret_or_altered_is_invalid() -> None:
    token = Signer(bytes(32)).issue_token("a@b.c", "publisher", 60)
    signer = Signer(SECRET)
    good = signer.issue_token("a@b.c", "reader", 60)
    for bad in [token, good[:-2], good + "A", good.replace("v1.", "v2."), "", "a.b.c", "é" * 10]:
        with pytest.raises(HttpError) as refused:
            signer.check_token(bad)
        assert refused.value.status == 401


def test_url_signatures_bind_method_blob_and_expiry() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock)
    query = dict(part.split("=") for part in signer.url_query("GET", "a" * 32, 10).split("&"))
    signer.check_url("GET", "a" * 32, query["expires"], query["sig"])
    for method, blob, expires in [
        ("PUT", "a" * 32, query["expires"]),
        ("GET", "b" * 32, query["expires"]),
        ("GET", "a" * 32, str(int(query["expires"]) + 1)),
    ]:
        with pytest.raises(HttpError) as refused:
            signer.check_url(method, blob, expires, query["sig"])
        assert refused.value.status == 403
    clock.now += 10
    with pytest.raises(HttpError, match="expired"):
        signer.check_url("GET", "a" * 32, query["expires"], query["sig"])


# The login limiter


def attempt(limiter: LoginLimiter, email: str, succeed: bool = False) -> int | None:
    with limiter.check(email) as current:
        current.succeeded = succeed
        return current.retry_after


def test_limiter_counts_failures_in_a_sliding_window() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60.0, clock)
    for _ in range(4):
        assert attempt(limiter, "A@b.c") is None
        clock.now += 1
    assert attempt(limiter, "a@B.c") is None
    # Five failures, the oldest 4 s ago: it ages out in 56 s.
    assert attempt(limiter, "a@b.c") == 56
    assert attempt(limiter, "other@b.c") is None
    clock.now += 55.5
    assert attempt(limiter, "a@b.c", succeed=True) == 1
    clock.now += 0.5
    assert attempt(limiter, "a@b.c", succeed=True) is None


def test_an_exception_counts_as_a_failure() -> None:
    limiter = LoginLimiter(1, 60.0, Clock())
    with pytest.raises(KeyError), limiter.check("a@b.c"):
        raise KeyError("refused")
    assert attempt(limiter, "a@b.c") == 60


def test_limiter_success_clears_and_memory_is_bounded() -> None:
    clock = Clock()
    limiter = LoginLimiter(2, 60.0, clock)
    attempt(limiter, "a@b.c")
    attempt(limiter, "a@b.c")
    assert attempt(limiter, "a@b.c", succeed=True) is not None
    clock.now += 60
    assert attempt(limiter, "a@b.c") is None
    assert attempt(limiter, "a@b.c", succeed=True) is None
    assert attempt(limiter, "a@b.c") is None  # the success cleared both failures
    for i in range(3000):
        attempt(limiter, f"user{i}@b.c")
        clock.now += 0.1
    assert len(limiter._failures) < 2000
    assert limiter._checking == {}


def test_limiter_checks_one_email_at_a_time() -> None:
    limiter = LoginLimiter(5, 60.0, Clock())
    barrier = threading.Barrier(20)
    answers: list[int | None] = []

    def guess() -> None:
        barrier.wait()
        with limiter.check("a@b.c") as current:
            answers.append(current.retry_after)
            time.sleep(0.001)  # the password check

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(None) == 5


# Passwords


def test_password_hashes_verify_and_differ_by_salt() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert verify_password("pw", first)
    assert verify_password("pw", second)
    assert not verify_password("pW", first)
    assert not verify_password("pw", DUMMY_HASH)
    assert not verify_password("", DUMMY_HASH)
    for broken in ["", "scrypt$1$2", "md5$16384$8$1$AA==$AA==", first.replace("$8$", "$x$")]:
        assert not verify_password("pw", broken)


# Bodies and ranges


def body(raw: bytes, **headers: str) -> Body:
    message = Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return Body(io.BufferedReader(io.BytesIO(raw)), message)  # type: ignore[arg-type]


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    reader = body(raw, Transfer_Encoding="chunked")
    assert reader.read(100) == b"abc0123456789"
    assert reader.done


def test_content_length_body_stops_at_its_length() -> None:
    assert body(b"abcdef", Content_Length="4").read(10) == b"abcd"
    assert body(b"", Content_Length="0").read(10) == b""
    assert not body(b"").present
    with pytest.raises(HttpError) as short:
        body(b"ab", Content_Length="4").read(10)
    assert short.value.status == 400
    with pytest.raises(HttpError) as big:
        body(b"abcdef", Content_Length="6").read(5)
    assert big.value.status == 413


@pytest.mark.parametrize(
    ("value", "size", "span"),
    [
        (None, 10, None),
        ("bytes=0-", 10, (0, 10)),
        ("bytes=9-", 10, (9, 10)),
        ("bytes=2-4", 10, (2, 5)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes = 2 - ", 10, (2, 10)),
    ],
)
def test_parse_range(value: str | None, size: int, span: tuple[int, int] | None) -> None:
    assert parse_range(value, size) == span


@pytest.mark.parametrize("value", ["bytes=10-", "bytes=0-", "bytes=-1"])
def test_nothing_of_an_empty_blob_satisfies_a_range(value: str) -> None:
    with pytest.raises(HttpError) as refused:
        parse_range(value, 0)
    assert refused.value.status == 416
    assert refused.value.headers["Content-Range"] == "bytes */0"
