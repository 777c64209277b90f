"""The ``upstream`` fixture itself: a real server, users, restart on the same port."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from fixtures.upstream import Upstream, UpstreamError

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)


def test_upstream_serves_and_its_users_log_in(upstream: Upstream) -> None:
    assert requests.get(f"{upstream.url}/health", timeout=10).json() == {"status": "ok"}
    assert upstream.login(upstream.reader)
    assert upstream.login(upstream.publisher)
    assert upstream.blob_paths() == []


def test_added_user_logs_in(upstream: Upstream) -> None:
    account = upstream.add_user("new@example.com", "a password", "reader")
    assert upstream.login(account)


def test_stop_and_start_keep_port_and_data(upstream: Upstream) -> None:
    url = upstream.url
    upstream.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=10)
    upstream.start()
    assert upstream.url == url
    assert upstream.login(upstream.reader)


def test_problems_report_tracebacks_and_deaths(upstream: Upstream) -> None:
    assert upstream.problems() == []
    with upstream.log_path.open("a") as log:
        log.write("Traceback (most recent call last):\n")
    assert upstream.problems() == ["coffer-upstream logged a traceback"]
    # Clean the log again, or this test's own teardown would fail.
    upstream.log_path.write_text("")


def test_start_waits_for_its_port_to_be_free_again(upstream: Upstream) -> None:
    upstream.stop()
    squatter = socket.create_server(("127.0.0.1", upstream.port))
    timer = threading.Timer(0.5, squatter.close)
    timer.start()
    try:
        upstream.start()
    finally:
        timer.join()
    assert upstream.login(upstream.reader)


def test_a_server_that_cannot_start_says_why(upstream_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UpstreamError, match="must be positive"):
        upstream_factory(token_ttl=0)
