"""A state dir cofferd cannot write: loads that need no write serve, the rest say why.

The index file is made immutable (``chattr +i``: read-only even for root, as
a read-only mount would be) between two runs of cofferd over the same state
and cache dirs. The second run starts, ``status`` says the state dir cannot be
written, a load of a cached resource serves, and a change that must be kept
(``pin``) is refused with 507 and a sentence, never an internal error.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coffer import client as cc
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

Daemon = Callable[..., CofferdProcess]

pytestmark = pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, str]]:
    state, cache = tmp_path / "state", tmp_path / "cache"
    state.mkdir()
    cache.mkdir()
    yield {"COFFER_STATE_DIR": str(state), "COFFER_CACHE_DIR": str(cache)}
    subprocess.run(["chattr", "-i", str(state / "index.sqlite3")], check=False)


def test_loads_serve_and_writes_say_why(
    cofferd: Daemon, upstream: Upstream, dirs: dict[str, str]
) -> None:
    data = b"weights" * 1000
    first = cofferd(env=dirs)
    with cc.Client(first.socket_path, timeout=30) as c:
        c.login(upstream.publisher.email, upstream.publisher.password)
        first.sign(c.upload_bytes("m.bin", "models", data))
        assert c.load_bytes("m.bin") == data  # now cached
        assert c.status()["cache"]["state_writable"] is True
    first.stop()
    index = Path(dirs["COFFER_STATE_DIR"]) / "index.sqlite3"
    with sqlite3.connect(index) as db:  # whatever the stop left in the WAL, in the file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    made = subprocess.run(["chattr", "+i", str(index)], capture_output=True, check=False)
    if made.returncode:
        pytest.skip(f"chattr +i refused here: {made.stderr.decode().strip()}")

    second = cofferd(env=dirs)
    with cc.Client(second.socket_path, timeout=30) as c:
        c.login(upstream.publisher.email, upstream.publisher.password)
        cache = c.status()["cache"]
        assert cache["state_writable"] is False
        assert "readonly" in cache["state_error"]
        # Served from the cache: its last use is not kept, the load is.
        with c.load_memfd("m.bin") as memfd, memfd.file() as f:
            assert f.read() == data
        assert c.load_bytes("m.bin") == data
        with pytest.raises(cc.CofferRPCError) as info:
            c.call("pin", {"filename": "m.bin"})
        assert info.value.code == 507
        assert "state dir cannot be written" in info.value.detail
        assert c.health()["status"] == "ok"
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "coffer"),
            "--socket",
            str(second.socket_path),
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "state dir:       NOT writable" in shown.stdout
    assert "Traceback" not in second.stderr_path.read_text()
