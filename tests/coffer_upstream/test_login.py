"""POST /v1/login: tokens, one answer for every failure, and the failure limiter."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

import pytest
import requests

from fixtures.upstream import Upstream


def login(
    upstream: Upstream, email: str, password: str, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(
        f"{upstream.url}/v1/login",
        json={"email": email, "password": password},
        headers=headers,
        timeout=30,
    )


def login_from(upstream: Upstream, source: str, email: str, password: str) -> int:
    """The status of a login from another loopback address (127.0.0.0/8 is all ours)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", upstream.port, timeout=30, source_address=(source, 0)
    )
    try:
        body = json.dumps({"email": email, "password": password})
        connection.request("POST", "/v1/login", body, headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_login_gives_a_bearer_token_that_works(upstream: Upstream) -> None:
    response = login(upstream, upstream.reader.email, upstream.reader.password)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == upstream.token_ttl
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    probe = requests.get(
        f"{upstream.url}/v1/archives/none/key",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=30,
    )
    assert probe.status_code == 404  # past authentication


def test_email_matches_case_insensitively(upstream: Upstream) -> None:
    response = login(upstream, upstream.reader.email.upper(), upstream.reader.password)
    assert response.status_code == 200


def test_unknown_email_and_wrong_password_answer_the_same(upstream: Upstream) -> None:
    wrong = login(upstream, upstream.reader.email, "not the password")
    unknown = login(upstream, "nobody@example.com", upstream.reader.password)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "invalid email or password"}
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_email_costs_a_hash_too(upstream: Upstream) -> None:
    # Same work for both failures: an unknown email is not answered much faster.
    def timed(email: str) -> float:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            assert login(upstream, email, "wrong").status_code == 401
            best = min(best, time.perf_counter() - started)
        return best

    # Two tries each: five failures from one source would be limited.
    known = timed(upstream.reader.email)
    unknown = timed("nobody@example.com")
    assert unknown > known / 3


def test_failures_past_the_limit_get_429_even_with_the_right_password(
    upstream: Upstream,
) -> None:
    email = upstream.reader.email
    for _ in range(5):
        assert login(upstream, email, "wrong").status_code == 401
    limited = login(upstream, email, upstream.reader.password)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "detail" in limited.json()
    # Counted per source: the same source is slowed down for any account...
    assert login(upstream, upstream.publisher.email, upstream.publisher.password).status_code == 429
    # ... and the owner logging in from elsewhere is not locked out.
    assert login_from(upstream, "127.0.0.2", email, upstream.reader.password) == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_source(
    upstream_factory: Callable[..., Upstream],
) -> None:
    upstream = upstream_factory(forwarded_allow_ips="127.0.0.1")
    email = upstream.reader.email
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(5):
        assert login(upstream, email, "wrong", guesser).status_code == 401
    assert login(upstream, email, upstream.reader.password, guesser).status_code == 429
    owner = {"X-Forwarded-For": "198.51.100.1"}
    assert login(upstream, email, upstream.reader.password, owner).status_code == 200


def test_an_untrusted_client_cannot_pick_its_source(upstream: Upstream) -> None:
    email = upstream.reader.email
    for i in range(5):
        spoofed = {"X-Forwarded-For": f"203.0.113.{i}"}
        assert login(upstream, email, "wrong", spoofed).status_code == 401
    # Each claimed another address: all counted against the real one.
    fresh = {"X-Forwarded-For": "198.51.100.1"}
    assert login(upstream, email, upstream.reader.password, fresh).status_code == 429


def test_unknown_emails_are_limited_the_same(upstream: Upstream) -> None:
    for _ in range(5):
        assert login(upstream, "ghost@example.com", "x").status_code == 401
    assert login(upstream, "ghost@example.com", "x").status_code == 429


def test_a_success_clears_the_failure_count(upstream: Upstream) -> None:
    email = upstream.reader.email
    for _ in range(4):
        assert login(upstream, email, "wrong").status_code == 401
    assert login(upstream, email, upstream.reader.password).status_code == 200
    for _ in range(4):
        assert login(upstream, email, "wrong").status_code == 401
    assert login(upstream, email, upstream.reader.password).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@b.c"},
        {"password": "x"},
        {"email": 1, "password": "x"},
        {"email": "a@b.c", "password": None},
        {"email": "a@b.c", "password": ["x"]},
        {"email": "a" * 300, "password": "x"},
        ["a@b.c", "x"],
        "a@b.c",
    ],
)
def test_malformed_login_is_400(upstream: Upstream, body: object) -> None:
    response = requests.post(f"{upstream.url}/v1/login", json=body, timeout=30)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_expired_token_is_401(upstream_factory: Callable[..., Upstream]) -> None:
    # Three seconds: a loaded machine must still get the first call in before expiry.
    upstream = upstream_factory(token_ttl=3)
    issued = time.monotonic()
    headers = upstream.auth(upstream.reader)
    url = f"{upstream.url}/v1/archives/none/key"
    assert requests.get(url, headers=headers, timeout=30).status_code == 404
    time.sleep(max(0.0, issued + 4.1 - time.monotonic()))
    expired = requests.get(url, headers=headers, timeout=30)
    assert expired.status_code == 401
    assert expired.json() == {"detail": "token expired"}
    # Logging in again gives a token that works.
    assert requests.get(url, headers=upstream.auth(upstream.reader), timeout=30).status_code == 404


def test_secrets_stay_out_of_the_log(upstream: Upstream) -> None:
    token = upstream.login(upstream.publisher)
    login(upstream, upstream.reader.email, "a wrong guess")
    upstream.publish("models", "m", b"big part")
    log = upstream.log_with("POST /v1/login", "/commit")
    for secret in (token, upstream.publisher.password, "a wrong guess", "sig="):
        assert secret not in log


def test_many_devices_may_log_in_to_one_account_at_once(upstream: Upstream) -> None:
    statuses: list[int] = []

    def one() -> None:
        statuses.append(
            login(upstream, upstream.reader.email, upstream.reader.password).status_code
        )

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8


def test_a_login_storm_is_refused_early_and_starves_nothing(upstream: Upstream) -> None:
    # Two password checks at once and 64 waiting: a burst of 150 cannot all queue.
    statuses: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        response = login(upstream, upstream.reader.email, upstream.reader.password)
        with lock:
            statuses.append((response.status_code, response.headers.get("Retry-After")))

    token = upstream.login(upstream.reader)
    threads = [threading.Thread(target=one) for _ in range(150)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(0.3)
    # Mid-storm, other requests are answered at once.
    started = time.monotonic()
    other = requests.get(
        f"{upstream.url}/v1/archives/none/key",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert other.status_code == 404
    assert time.monotonic() - started < 2.0
    for t in threads:
        t.join(timeout=120)
    assert len(statuses) == 150
    refused = [s for s in statuses if s[0] == 503]
    assert refused, "the storm was not refused"
    assert all(retry == "1" for _, retry in refused)
    assert {code for code, _ in statuses} <= {200, 503}
    assert sum(code == 200 for code, _ in statuses) >= 66
