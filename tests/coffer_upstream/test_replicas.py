"""Two replicas over one database and one data dir: any may serve any step."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator

import pytest
import requests

from coffer_upstream.db import make_engine, migrate
from coffer_upstream.db.session import Transactions
from coffer_upstream.janitor import NamedLock
from fixtures.upstream import Upstream


@pytest.fixture
def replicas(upstream_factory: Callable[..., Upstream]) -> Iterator[tuple[Upstream, Upstream]]:
    first = upstream_factory()
    second = Upstream(
        first.data_dir, first.reader, first.publisher, database_url=first.database_url
    ).start()
    try:
        yield first, second
    finally:
        second.stop()
        assert second.problems() == []


def test_a_publish_begun_on_one_replica_commits_on_the_other(
    replicas: tuple[Upstream, Upstream],
) -> None:
    one, other = replicas
    big = os.urandom(100_000)
    # Logged in on one, the token works on the other: the keys are shared.
    headers = one.auth(one.publisher)
    begun = requests.post(
        f"{one.url}/v1/resources/models/m/uploads", json={}, headers=headers, timeout=30
    )
    assert begun.status_code == 201
    assert requests.put(begun.json()["big_url"], data=big, timeout=60).status_code == 201
    commit = requests.post(
        f"{other.url}/v1/resources/models/m/uploads/{begun.json()['upload_id']}/commit",
        json={
            "small": base64.b64encode(bytes(40)).decode(),
            "key": base64.b64encode(bytes(32)).decode(),
            "big_size": len(big),
            "big_sha256": hashlib.sha256(big).hexdigest(),
            "plaintext_size": len(big),
        },
        headers=headers,
        timeout=30,
    )
    assert commit.status_code == 200, commit.text
    got = requests.get(
        f"{other.url}/v1/resources/models/m", headers=other.auth(other.reader), timeout=30
    )
    assert requests.get(got.json()["big_url"], timeout=60).content == big


def test_failed_logins_count_across_replicas(replicas: tuple[Upstream, Upstream]) -> None:
    one, other = replicas
    for server in (one, other, one, other, one):
        response = requests.post(
            f"{server.url}/v1/login",
            json={"email": one.reader.email, "password": "wrong"},
            timeout=30,
        )
        assert response.status_code == 401
    limited = requests.post(
        f"{other.url}/v1/login",
        json={"email": one.reader.email, "password": one.reader.password},
        timeout=30,
    )
    assert limited.status_code == 429


def test_the_janitor_lock_has_one_holder_until_it_expires(upstream: Upstream) -> None:
    url = upstream.database_url or f"sqlite:///{upstream.data_dir / 'upstream.sqlite3'}"
    engine = make_engine(url)
    try:
        assert migrate.current(engine) == migrate.head()
        now = [1_000]
        transactions = Transactions(engine)
        first = NamedLock(transactions, "test-lock", lambda: now[0])
        second = NamedLock(transactions, "test-lock", lambda: now[0])
        assert first.acquire(ttl=60)
        assert not second.acquire(ttl=60)
        assert first.acquire(ttl=60)  # its holder may renew it
        now[0] += 61
        assert second.acquire(ttl=60)  # expired: taken over
        assert not first.acquire(ttl=60)
        second.release()
        assert first.acquire(ttl=60)
    finally:
        engine.dispose()
