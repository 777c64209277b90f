"""cofferd stopped (SIGTERM) while loads run: every caller in flight gets its
answer (``504`` unless its load ended in the grace), never an EOF; nothing
is logged as a traceback; the process exits within ``shutdown_grace`` plus
the transport's cancel wait, even when a load waits on a stalled upstream
whose timeout is far longer."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.rpc.transport.server import CANCEL_WAIT
from faults.conftest import Stack, figure
from faults.proxy import Fault
from fixtures.daemon import CofferdProcess, read_response

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 5)
#: Past grace + CANCEL_WAIT: a process start's worth, on a loaded 2-core machine.
SLACK = 3.0
GRACE = 0.3
ROUNDS = 10
CALLERS = 3


class Caller:
    """One ``load`` into a pipe drained slowly on a thread: what came back, and when."""

    def __init__(
        self,
        daemon: CofferdProcess,
        name: str,
        drain_delay: float,
        paused: threading.Event | None = None,
    ) -> None:
        """``paused``: after the first bytes, stop draining until it is set."""
        self._paused = paused
        self.sock = daemon.connect()
        self.started = threading.Event()  # the first plaintext bytes came: in flight
        self.answer: dict[str, Any] | None = None
        self.failure: str | None = None
        self.bytes = 0
        r, w = os.pipe()
        request = {"jsonrpc": "2.0", "method": "load", "params": {"filename": name}, "id": 1}
        socket.send_fds(self.sock, [json.dumps(request).encode() + b"\n"], [w])
        os.close(w)
        self._thread = threading.Thread(target=self._drain, args=(r, drain_delay), daemon=True)
        self._thread.start()

    def _drain(self, r: int, delay: float) -> None:
        try:
            with open(r, "rb", buffering=0) as pipe:
                while chunk := pipe.read(64 * 1024):
                    self.bytes += len(chunk)
                    self.started.set()
                    if self._paused is not None:
                        self._paused.wait(60)
                    time.sleep(delay)
            self.answer = read_response(self.sock, "load")
        except (OSError, ValueError) as exc:  # an EOF instead of an answer lands here
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.started.set()
            self.sock.close()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the caller got neither an answer nor an EOF"


def stop_timed(daemon: CofferdProcess) -> float:
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    return time.monotonic() - started


def test_sigterm_during_loads_answers_every_caller(
    stack: Callable[..., Stack], cofferd: Callable[..., CofferdProcess]
) -> None:
    s = stack()
    s.login()
    assert s.upload("s.bin", DATA)["result"]["version"] == 1
    # Offline use on, so a load with a record at hand asks the upstream on a
    # pool worker: the pool a stop once closed under a running load.
    env = {
        "COFFER_SHUTDOWN_GRACE": str(GRACE),
        "COFFER_UPSTREAM_TIMEOUT": "2",
        "COFFER_LEASE_PUBLIC_KEYS": s.upstream.lease_key(),
    }
    slowest = 0.0
    for round_no in range(ROUNDS):
        daemon = cofferd(upstream_url=s.api.url, env=env)
        s.daemon = daemon
        s.login()
        if round_no % 2:  # the record and the cache are there: the pool's path
            assert s.load("s.bin")[0] == DATA
        # 3 MiB drained at 64 KiB per 20 ms: ~1 s, longer than the grace.
        callers = [Caller(daemon, "s.bin", 0.02) for _ in range(CALLERS)]
        # And one whose reader stops: its load, stuck in a write, cannot see
        # the cancel. The reader comes back about when the stop's time is up,
        # so the load goes on (and submits its next segments) as cofferd exits.
        resume = threading.Event()
        callers.append(Caller(daemon, "s.bin", 0.0, paused=resume))
        for caller in callers:
            assert caller.started.wait(20)
        time.sleep(0.01 * round_no)  # the stop lands at a different point each round
        comeback = GRACE + CANCEL_WAIT - 0.2 + 0.05 * round_no
        timer = threading.Timer(comeback, resume.set)
        timer.start()
        elapsed = stop_timed(daemon)
        timer.join()
        slowest = max(slowest, elapsed)
        for caller in callers:
            caller.wait(20)
            assert caller.failure is None, caller.failure
            assert caller.answer is not None
            if "result" in caller.answer:  # it ended within the grace
                assert caller.bytes == len(DATA)
            else:
                assert caller.answer["error"]["code"] == ErrorCode.SHUTTING_DOWN, caller.answer
                assert caller.answer["id"] == 1
        log = daemon.stderr_text()
        assert "Traceback" not in log, log[-4000:]
        assert "stopped" in log
        assert elapsed < GRACE + CANCEL_WAIT + SLACK, f"round {round_no}: {elapsed:.1f}s"
    figure(f"SIGTERM during {CALLERS} loads, slowest stop of {ROUNDS}", slowest)


def test_loads_waiting_on_a_stalled_upstream_do_not_hold_the_stop(
    stack: Callable[..., Stack], cofferd: Callable[..., CofferdProcess]
) -> None:
    # The upstream's timeout is far past the stop's budget: the stop may not wait it out.
    s = stack(COFFER_UPSTREAM_TIMEOUT="30", COFFER_SHUTDOWN_GRACE="1")
    s.login()
    assert s.upload("a.bin", DATA)["result"]["version"] == 1
    assert s.upload("b.bin", DATA)["result"]["version"] == 1
    s.daemon.stop()
    # Offline use on and a record of a.bin: its load asks the upstream on a
    # pool worker, which Python's exit would wait for.
    env = {
        "COFFER_UPSTREAM_TIMEOUT": "30",
        "COFFER_SHUTDOWN_GRACE": "1",
        "COFFER_LEASE_PUBLIC_KEYS": s.upstream.lease_key(),
    }
    daemon = s.daemon = cofferd(upstream_url=s.api.url, env=env)
    s.login()
    assert s.load("a.bin")[0] == DATA
    s.api.fault = Fault(stall=True)
    callers = [Caller(daemon, name, 0.0) for name in ("a.bin", "b.bin")]
    time.sleep(0.5)  # both are waiting on the upstream
    assert not any(c.started.is_set() for c in callers)
    elapsed = stop_timed(daemon)
    figure("SIGTERM with loads on a stalled upstream (timeout 30 s): exit after", elapsed)
    assert elapsed < 1 + CANCEL_WAIT + SLACK, elapsed
    for caller in callers:
        caller.wait(10)
        assert caller.failure is None, caller.failure
        assert caller.answer is not None
        assert caller.answer["error"]["code"] == ErrorCode.SHUTTING_DOWN, caller.answer
        assert caller.bytes == 0
    log = daemon.stderr_text()
    assert "Traceback" not in log, log[-4000:]
    assert "left running" in log
    s.api.fault = Fault()
