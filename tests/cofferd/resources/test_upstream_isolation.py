"""The API client under contention: no lock across the network, one overall
deadline, and a failed login that leaves the working one in place."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from scripted_http import Reply, ScriptedServer

from cofferd.errors import Unauthorized, UpstreamUnavailable
from cofferd.resources.upstream import ApiClient, RetryPolicy


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()


def _token(n: int) -> Reply:
    return Reply(200, {"access_token": f"tok-{n}", "token_type": "Bearer", "expires_in": 900})


def _archive_key(_: object) -> Reply:
    return Reply(200, {"archive_id": "a1", "key": "A" * 43 + "="})


def test_a_slow_login_blocks_no_call_that_has_a_token(scripted: ScriptedServer) -> None:
    logins = iter(range(1, 100))
    slow = threading.Event()

    def login(_: object) -> Reply:
        n = next(logins)
        return Reply(200, _token(n).body, delay=3.0 if slow.is_set() else 0.0)

    scripted.routes["POST /v1/login"] = login
    scripted.routes["GET /v1/archives/"] = _archive_key
    client = ApiClient(scripted.url, timeout=10)
    client.login("a@example.com", "pw")
    slow.set()
    other = threading.Thread(target=client.login, args=("b@example.com", "pw2"))
    other.start()
    time.sleep(0.3)  # the second login is on the network now
    start = time.monotonic()
    client.get_archive_key("a1")
    assert time.monotonic() - start < 1.0  # not behind the 3 s login
    other.join(10)
    client.close()


def test_a_failed_login_keeps_the_working_one(scripted: ScriptedServer) -> None:
    good = {"email": "a@example.com", "password": "pw"}

    def login(seen: object) -> Reply:
        import json

        body = json.loads(seen.body)  # type: ignore[attr-defined]
        return _token(1) if body == good else Reply(401, {"detail": "no"})

    scripted.routes["POST /v1/login"] = login
    scripted.routes["GET /v1/archives/"] = _archive_key
    client = ApiClient(scripted.url, timeout=10)
    client.login(**good)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            client.login("a@example.com", "wrong")
    assert client.authenticated
    client.get_archive_key("a1")
    assert scripted.count("POST", "/v1/login") == 4
    client.close()
    assert not client.authenticated  # close forgets the credentials


def test_retries_end_within_one_deadline(scripted: ScriptedServer) -> None:
    scripted.routes["POST /v1/login"] = lambda _: _token(1)
    scripted.routes["GET /v1/archives/"] = lambda _: Reply(200, {}, delay=5.0)
    client = ApiClient(scripted.url, timeout=1.0, retry=RetryPolicy(retries=4))
    client.login("a@example.com", "pw")
    start = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        client.get_archive_key("a1")
    # Five attempts of 1 s each before; one deadline of 1 s now.
    assert time.monotonic() - start < 1.8
    client.close()
