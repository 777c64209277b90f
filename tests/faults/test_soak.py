"""A bounded soak: 16 callers, mixed methods, 30 s; RSS and fds stay flat.

Two phases, a warm-up (10 s) and the run (20 s), each ending with every
caller gone. Bounds (docs/reliability.md): idle RSS after the run at most
SOAK_RSS_GROWTH above idle RSS after the warm-up (RSS under load swings with
the calls in flight); open fds (TCP pool aside) back to the count before; no
call fails.

What it proves at that length: the run serves at least MIN_RUN_CALLS calls
(asserted; 2,622 in a run on the shared 2-core build machine, and the
busiest 90 s run seen served 6,535, ~1,450 in 20 s), so a
leak of more than 100 KiB a call (a fifth of what one load moves, any 1 MiB
segment buffer) crosses the RSS bound, and a single fd leaked by any call
fails the fd bound. A leak of a few KiB a call needs a longer run:
``COFFER_SOAK_SECONDS=600``.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from collections.abc import Callable

import pytest

from faults.conftest import Stack, figure, threads_of
from fixtures.daemon import load_via_pipe, rpc, upload_via_pipe

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("COFFER_SOAK_SECONDS", "30"))
CALLERS = 16
#: Bytes of idle RSS growth allowed between the end of the warm-up and the end.
#: glibc keeps freed memory in per-thread arenas (up to 8 per core) and raises
#: its mmap threshold after the first freed 1 MiB segment buffer, so later ones
#: come from, and stay in, those arenas: seen here +27 MiB in one run and
#: -8 MiB in another, with the same code. 3 MiB for each of the 16 callers
#: bounds that; a leak of anything per call (thousands of calls moving 512 KiB
#: each) still crosses it.
SOAK_RSS_GROWTH = CALLERS * 3 * 1024 * 1024
#: Calls the run phase must serve: 500 leaks of 100 KiB cross SOAK_RSS_GROWTH.
MIN_RUN_CALLS = 500
DATA = os.urandom(512 * 1024)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_soak(stack: Callable[..., Stack]) -> None:
    s = stack(COFFER_UPSTREAM_TIMEOUT="10")
    s.login()
    assert s.upload("soak.bin", DATA)["result"]["version"] == 1
    errors: list[object] = []
    calls = [0]
    stop = threading.Event()

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                with s.daemon.connect() as sock:
                    for _ in range(rng.randint(1, 5)):
                        _one(sock, rng)
                        calls[0] += 1
            except Exception as exc:
                errors.append(repr(exc))

    def _one(sock: object, rng: random.Random) -> None:
        kind = rng.choice(["health", "status", "load", "load_inline", "upload", "bad"])
        if kind in ("health", "status"):
            answer = rpc(sock, kind)  # type: ignore[arg-type]
        elif kind == "load":
            data, answer = load_via_pipe(sock, {"filename": "soak.bin"})  # type: ignore[arg-type]
            assert data == DATA
        elif kind == "load_inline":
            answer = rpc(sock, "load", {"filename": "soak.bin"})  # type: ignore[arg-type]
            assert base64.b64decode(answer["result"]["data"]) == DATA
        elif kind == "upload":
            name = f"s{rng.randint(0, 3)}.bin"
            body = os.urandom(rng.randint(0, 64 * 1024))
            answer = upload_via_pipe(sock, {"filename": name, "size": len(body)}, body)  # type: ignore[arg-type]
        else:
            answer = rpc(sock, "load", {"filename": "../x"})  # type: ignore[arg-type]
            assert answer["error"]["code"] == 400
            return
        assert "result" in answer, answer

    base_rss, base_fds = rss(s.daemon.pid), s.daemon.open_fds()

    def phase(seconds: float) -> tuple[int, int, int]:
        """Run the callers for ``seconds``; (RSS under load, RSS idle after, fds idle after)."""
        stop.clear()
        threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(CALLERS)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        loaded = rss(s.daemon.pid)
        stop.set()
        for t in threads:
            t.join(60)
        end = time.monotonic() + 10
        while s.daemon.open_fds() > base_fds and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
        return loaded, rss(s.daemon.pid), s.daemon.open_fds()

    warm = min(10.0, SECONDS / 3)
    warm_loaded, warm_rss, warm_fds = phase(warm)
    warm_calls = calls[0]
    end_loaded, end_rss, end_fds = phase(SECONDS - warm)
    run_calls = calls[0] - warm_calls
    figure("soak calls", calls[0], "calls")
    figure("soak calls in the run", run_calls, "calls")
    figure("soak RSS before (idle)", base_rss / 2**20, "MiB")
    figure("soak RSS end of warm-up (under load)", warm_loaded / 2**20, "MiB")
    figure("soak RSS after warm-up (idle)", warm_rss / 2**20, "MiB")
    figure("soak RSS end of run (under load)", end_loaded / 2**20, "MiB")
    figure("soak RSS after run (idle)", end_rss / 2**20, "MiB")
    figure("soak fds before (idle)", base_fds, "fds")
    figure("soak fds after warm-up (idle)", warm_fds, "fds")
    figure("soak fds after run (idle)", end_fds, "fds")
    figure("soak threads at end", threads_of(s.daemon.pid), "threads")
    assert errors == [], errors[:5]
    assert run_calls >= MIN_RUN_CALLS, run_calls
    assert end_rss - warm_rss < SOAK_RSS_GROWTH, (warm_rss, end_rss)
    assert end_fds <= base_fds, (base_fds, end_fds)
