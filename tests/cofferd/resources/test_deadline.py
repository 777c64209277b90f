"""The deadline over a whole exchange: a trickle is cut, a slow consumer is not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions

from cofferd.resources.deadline import MIN_PROGRESS, Guard, GuardedAdapter, attached, watched

BODY = 4 * MIN_PROGRESS
#: What a cut connection raises: requests wraps it, a raw read does not.
CUT = (requests.RequestException, urllib3.exceptions.HTTPError)


def _serve(listener: socket.socket, trickle: float | None) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY)
                if trickle is None:
                    conn.sendall(bytes(BODY))
                    continue
                for _ in range(BODY):
                    conn.sendall(b"x")
                    time.sleep(trickle)
            except OSError:
                continue


@pytest.fixture(params=[None, 0.2], ids=["fast", "trickle"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(listener, request.param), daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", request.param is not None
    listener.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.mount("http://", GuardedAdapter())
    yield s
    s.close()


def test_a_whole_answer_deadline_cuts_a_trickle(server, session) -> None:
    url, trickles = server
    guard = Guard(1.0)
    start = time.monotonic()
    if not trickles:
        with watched(guard), attached(guard):
            assert len(session.get(url, timeout=5).content) == BODY
        return
    # Each read gets its byte well within the per-read timeout: only the guard ends it.
    with pytest.raises(CUT), watched(guard), attached(guard):
        session.get(url, timeout=5)
    assert guard.expired
    assert time.monotonic() - start < 2.0


def _stream(
    session: requests.Session, url: str, guard: Guard, pause: bool, delay: float = 0.4
) -> int:
    with attached(guard):
        resp = session.get(url, stream=True, timeout=5)
    got = 0
    with watched(guard), resp:
        while chunk := resp.raw.read1(MIN_PROGRESS // 4):
            got += len(chunk)
            guard.moved(len(chunk))
            if pause:
                with guard.paused():
                    time.sleep(delay)  # a slow consumer: two windows in all
            else:
                time.sleep(delay)
    return got


def test_a_slow_consumer_is_not_the_servers_slowness(server, session) -> None:
    url, trickles = server
    if trickles:
        # A consumer as fast as it gets: the trickle is the server's alone.
        guard = Guard(0.5, progress=True)
        start = time.monotonic()
        with pytest.raises(CUT):
            _stream(session, url, guard, pause=True, delay=0.0)
        assert guard.expired
        assert time.monotonic() - start < 1.5
        return
    assert _stream(session, url, Guard(0.5, progress=True), pause=True) == BODY
    # Without the pause the consumer's own time counts against the server.
    guard = Guard(0.5, progress=True)
    with pytest.raises(CUT):
        _stream(session, url, guard, pause=False)
    assert guard.expired
