"""cofferd killed (SIGKILL) mid-upload and mid-cold-load, then started again on
the same dirs: no half-published version, no temporary file left, loads work.
And a cache dir on a full tmpfs: loads still work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.conftest import Stack
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe, wait_for_health

DATA = os.urandom(4 * 1024 * 1024 + 3)


@pytest.fixture
def restart() -> Iterator[Callable[[CofferdProcess], CofferdProcess]]:
    started: list[CofferdProcess] = []

    def again(old: CofferdProcess) -> CofferdProcess:
        err = old.base / "stderr-2.log"
        with err.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cofferd", "--socket", str(old.socket_path)],
                env=old.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=f,
            )
        wait_for_health(old.socket_path, proc, err)
        new = CofferdProcess(old.socket_path, proc, old.env, old.base, err)
        started.append(new)
        return new

    yield again
    for daemon in started:
        daemon.stop()
        assert "Traceback" not in daemon.stderr_text()


def _kill(daemon: CofferdProcess) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    daemon.stopped = True


def _temp_files(base: Path) -> list[Path]:
    return [p for p in (base / "cache").rglob(".tmp-*")]


def test_killed_mid_upload(
    stack: Callable[..., Stack], restart: Callable[[CofferdProcess], CofferdProcess]
) -> None:
    s = stack()
    s.login()
    sent = threading.Event()

    def slow() -> Iterator[bytes]:
        for i in range(64):
            yield DATA[i << 16 : (i + 1) << 16]
            if i == 8:
                sent.set()
            time.sleep(0.02)

    sock = s.daemon.connect()
    caller = threading.Thread(
        target=lambda: _swallow(lambda: upload_via_pipe(sock, {"filename": "k.bin"}, slow())),
        daemon=True,
    )
    caller.start()
    assert sent.wait(20)
    _kill(s.daemon)
    caller.join(20)
    sock.close()
    again = restart(s.daemon)
    s.daemon = again
    s.login()
    assert again.call("load", {"filename": "k.bin"})["error"]["code"] == 404  # nothing published
    end = time.monotonic() + 10
    while s.upstream.temp_paths() and time.monotonic() < end:
        time.sleep(0.1)
    assert s.upstream.temp_paths() == []
    assert s.upload("k.bin", DATA)["result"]["version"] == 1


def test_killed_mid_cold_load(
    stack: Callable[..., Stack], restart: Callable[[CofferdProcess], CofferdProcess]
) -> None:
    s = stack()
    s.login()
    assert s.upload("c.bin", DATA)["result"]["version"] == 1
    sock = s.daemon.connect()
    caller = threading.Thread(
        target=lambda: _swallow(lambda: load_via_pipe(sock, {"filename": "c.bin"}, 0.3)),
        daemon=True,
    )
    caller.start()
    time.sleep(1.0)  # the drain is slow: the load is mid-way
    _kill(s.daemon)
    caller.join(20)
    sock.close()
    again = restart(s.daemon)
    s.daemon = again
    s.login()
    data, answer = s.load("c.bin")
    assert answer["result"]["version"] == 1
    assert data == DATA
    assert _temp_files(again.base) == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_full_tmpfs_cache_still_serves(stack: Callable[..., Stack], tmp_path: Path) -> None:
    cache = tmp_path / "small-cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)], check=True)
    try:
        s = stack(COFFER_CACHE_DIR=str(cache))
        s.login()
        assert s.upload("t.bin", DATA)["result"]["version"] == 1
        for _ in range(2):  # the cache cannot hold it: streamed each time
            data, answer = s.load("t.bin")
            assert answer["result"]["version"] == 1, answer
            assert data == DATA
        assert list(cache.rglob(".tmp-*")) == []
        s.daemon.stop()
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def _swallow(fn: Callable[[], object]) -> None:
    # The daemon died under the call: an error here is expected.
    with contextlib.suppress(OSError, ValueError):
        fn()
