"""A bounded soak: 16 callers, mixed methods, ~90 s; RSS and fds stay flat.

Two phases, a warm-up (15 s) and the run, each ending with every caller gone.
Bounds (docs/reliability.md): idle RSS after the run at most SOAK_RSS_GROWTH
above idle RSS after the warm-up (RSS under load swings with the calls in
flight); open fds (TCP pool aside) back to the count before; no call fails.
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

SECONDS = float(os.environ.get("COFFER_SOAK_SECONDS", "90"))
CALLERS = 16
#: Bytes of idle RSS growth allowed between the end of the warm-up and the end.
#: glibc keeps freed memory in per-thread arenas (up to 8 per core) and raises
#: its mmap threshold after the first freed 1 MiB segment buffer, so later ones
#: come from, and stay in, those arenas: seen here +27 MiB in one run and
#: -8 MiB in another, with the same code. 3 MiB for each of the 16 callers
#: bounds that; a leak of anything per call (thousands of calls moving 512 KiB
#: each) still crosses it.
SOAK_RSS_GROWTH = CALLERS * 3 * 1024 * 1024
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

    warm = min(15.0, SECONDS / 5)
    warm_loaded, warm_rss, warm_fds = phase(warm)
    end_loaded, end_rss, end_fds = phase(SECONDS - warm)
    figure("soak calls", calls[0], "calls")
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
    assert end_rss - warm_rss < SOAK_RSS_GROWTH, (warm_rss, end_rss)
    assert end_fds <= base_fds, (base_fds, end_fds)
