"""sd_notify: against a real NOTIFY_SOCKET datagram socket the test binds and reads."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cofferd.notify import Notifier, watchdog_interval
from fixtures.daemon import CofferdProcess

NO_UPSTREAM = "http://127.0.0.1:9"


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    path = Path(tempfile.mkdtemp(prefix="cfn-")) / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield str(path), sock
    finally:
        sock.close()
        path.unlink()
        path.parent.rmdir()


def receive_until(sock: socket.socket, done: Callable[[list[str]], bool]) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + 20
    while not done(messages) and time.monotonic() < deadline:
        messages.append(sock.recv(4096).decode())
    return messages


def test_ready_status_watchdog_stopping_in_order(
    cofferd: Callable[..., CofferdProcess], notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    daemon = cofferd(upstream_url=NO_UPSTREAM, notify_socket=path, env={"WATCHDOG_USEC": "200000"})
    before = receive_until(sock, lambda m: sum("WATCHDOG=1" in x for x in m) >= 3)
    assert before[0].startswith("READY=1\nSTATUS=serving")
    assert all(m in ("WATCHDOG=1",) or m.startswith("STATUS=") for m in before[1:])
    assert daemon.stop(signal.SIGTERM) == 0
    sock.settimeout(0.5)
    after: list[str] = []
    try:
        while True:
            after.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    stopping = [m for m in after if m.startswith("STOPPING=1")]
    assert len(stopping) == 1
    assert "STATUS=stopping" in stopping[0]
    assert "READY=1" not in "".join(after)
    # Pings may go on while in-flight calls finish (a long grace must not trip
    # the watchdog); anything else after STOPPING would be a second life.
    rest = after[after.index(stopping[0]) + 1 :]
    assert all(m == "WATCHDOG=1" or m.startswith("STATUS=stopping") for m in rest), rest


def test_watchdog_only_when_asked_and_meant_for_us() -> None:
    assert watchdog_interval({}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}, 10) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "10"}, 10) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "11"}, 10) is None


def test_status_follows_work_and_named_parts() -> None:
    sent: list[str] = []
    notifier = Notifier(sent.append)
    notifier.ready()
    with notifier.working("loading models/a"):
        with notifier.working("uploading models/b"):
            pass
        notifier.set_status("unlock", "unlock: decrypting 40%")
    notifier.set_status("unlock", None)
    notifier.stopping()
    notifier.set_status("unlock", "unlock: cancelled")
    assert sent == [
        "READY=1\nSTATUS=serving, idle",
        "STATUS=serving, loading models/a",
        "STATUS=serving, 2 transfers: loading models/a, uploading models/b",
        "STATUS=serving, loading models/a",
        "STATUS=serving, loading models/a; unlock: decrypting 40%",
        "STATUS=serving, idle; unlock: decrypting 40%",
        "STATUS=serving, idle",
        "STOPPING=1\nSTATUS=stopping",
        "STATUS=stopping, idle; unlock: cancelled",
    ]
    notifier.close()


def test_silent_without_notify_socket() -> None:
    notifier = Notifier.from_environ({}, pid=os.getpid())
    assert not notifier.enabled
    notifier.ready()
    notifier.stopping()
    notifier.close()
