"""The client library against a real cofferd and the reference upstream."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer import client as cc
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

Daemon = Callable[..., CofferdProcess]
SEGMENT = 1024 * 1024


@pytest.fixture
def daemon(cofferd: Daemon) -> CofferdProcess:
    return cofferd()


@pytest.fixture
def c(daemon: CofferdProcess, upstream: Upstream) -> Iterator[cc.Client]:
    with cc.Client(daemon.socket_path, timeout=60) as client:
        client.login(upstream.publisher.email, upstream.publisher.password)
        yield client


def test_health_status_login(daemon: CofferdProcess, upstream: Upstream) -> None:
    with cc.Client(daemon.socket_path) as c:
        assert c.health()["status"] == "ok"
        before = c.status()
        assert before["authenticated"] is False
        assert before["model_cache_dir"] == daemon.env["COFFER_CACHE_DIR"]
        assert c.login(upstream.reader.email, upstream.reader.password) == {"status": "ok"}
        assert c.status()["authenticated"] is True


def test_login_refused_is_unauthorized(daemon: CofferdProcess, upstream: Upstream) -> None:
    with cc.Client(daemon.socket_path) as c, pytest.raises(cc.Unauthorized) as info:
        c.login(upstream.reader.email, "wrong password")
    assert info.value.code == 401
    assert "wrong password" not in info.value.detail


def test_upload_then_load_round_trip(c: cc.Client, daemon: CofferdProcess, tmp_path: Path) -> None:
    data = os.urandom(2 * SEGMENT + 17)  # crosses segment boundaries
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    with src.open("rb") as f:
        up = c.upload("model.bin", "models", f)
    assert up["status"] == "ok"
    daemon.sign(up)
    assert (up["folder"], up["filename"], up["size"]) == ("models", "model.bin", len(data))
    out = io.BytesIO()
    seen: list[int] = []
    got = c.load("model.bin", "models", out, progress=lambda done, total: seen.append(done))
    assert out.getvalue() == data
    assert (got["size"], got["version"]) == (len(data), up["version"])
    assert seen[-1] == len(data)


def test_upload_from_a_pipe_without_size(c: cc.Client, daemon: CofferdProcess) -> None:
    r, w = os.pipe()
    data = os.urandom(300_000)

    def feed() -> None:
        with open(w, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    with open(r, "rb") as src:
        up = c.upload("piped", "other", src)
    assert up["size"] == len(data)
    daemon.sign(up)
    assert c.load_bytes("piped", "other") == data


def test_inline_bytes_round_trip_and_empty_file(c: cc.Client, daemon: CofferdProcess) -> None:
    up = c.upload_bytes("small", "models", b"hello")
    assert up["size"] == 5
    daemon.sign(up)
    assert c.load_bytes("small") == b"hello"
    up = c.upload_bytes("empty", "models", b"")
    assert up["size"] == 0
    daemon.sign(up)
    out = io.BytesIO()
    assert c.load("empty", "models", out)["size"] == 0
    assert out.getvalue() == b""


def test_a_new_version_replaces_the_old(c: cc.Client, daemon: CofferdProcess) -> None:
    first = c.upload_bytes("v", "models", b"one")
    daemon.sign(first)
    second = c.upload_bytes("v", "models", b"two")
    daemon.sign(second)
    assert second["version"] > first["version"]
    assert c.load_bytes("v") == b"two"


def test_error_answers_map_to_exceptions(c: cc.Client) -> None:
    with pytest.raises(cc.NotFound):
        c.load("absent", "models", io.BytesIO())
    with pytest.raises(cc.BadRequest, match="invalid filename"):
        c.load("../etc/passwd", "models", io.BytesIO())
    with pytest.raises(cc.BadRequest):
        c.upload_bytes("bad name", "models", b"x")
    with pytest.raises(cc.MethodNotFound):
        c.call("no_such_method", {})
    with pytest.raises(cc.InvalidParams):
        c.call("load", {"name": "x"})
    assert c.health()["status"] == "ok"  # the connection survived all of them


def test_load_without_login_is_unauthorized(daemon: CofferdProcess) -> None:
    with cc.Client(daemon.socket_path) as c, pytest.raises(cc.Unauthorized):
        c.load("model.bin", "models", io.BytesIO())


def test_upload_short_of_its_size_publishes_nothing(c: cc.Client) -> None:
    with pytest.raises(cc.BadRequest):
        c.upload("short", "models", io.BytesIO(b"12345"), size=6)
    with pytest.raises(cc.NotFound):
        c.load_bytes("short")


def test_inline_cap_is_too_large(cofferd: Daemon, upstream: Upstream) -> None:
    d = cofferd(env={"COFFER_INLINE_MAX_BYTES": "1024"})
    with cc.Client(d.socket_path) as c:
        c.login(upstream.publisher.email, upstream.publisher.password)
        with pytest.raises(cc.TooLarge):
            c.upload_bytes("big", "models", b"x" * 2000)
        with io.BytesIO(b"x" * 2000) as src:
            d.sign(c.upload("big", "models", src))
        with pytest.raises(cc.TooLarge):
            c.load_bytes("big")
        assert c.health()["status"] == "ok"


def test_tampered_big_part_is_untrusted(
    c: cc.Client, daemon: CofferdProcess, upstream: Upstream
) -> None:
    daemon.sign(c.upload_bytes("t", "models", os.urandom(100_000)))
    (blob,) = upstream.blob_paths()
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 1
    blob.write_bytes(raw)
    # The signed segment digests catch it before decryption would (docs/trust.md).
    with pytest.raises(cc.Untrusted) as info:
        c.load("t", "models", io.BytesIO())
    assert (info.value.code, info.value.rule) == (422, "segment")


def test_upstream_down_is_upstream_unavailable(cofferd: Daemon) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    d = cofferd(upstream_url=f"http://127.0.0.1:{port}")
    with cc.Client(d.socket_path) as c, pytest.raises(cc.UpstreamUnavailable) as info:
        c.login("someone@example.com", "pw")
    assert info.value.code == 503


def test_daemon_gone_is_daemon_unavailable(daemon: CofferdProcess) -> None:
    c = cc.Client(daemon.socket_path)
    assert c.health()["status"] == "ok"
    assert daemon.stop() == 0
    with pytest.raises(cc.DaemonUnavailable):
        c.health()
    c.close()


def test_the_documented_example_program_works(
    c: cc.Client, daemon: CofferdProcess, tmp_path: Path
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "client.md").read_text()
    program = tmp_path / "fetch_model.py"
    program.write_text(doc.split("```python\n", 1)[1].split("```", 1)[0])
    data = os.urandom(100_000)
    daemon.sign(c.upload_bytes("m.bin", "models", data))
    assert c.socket_path
    env = {**os.environ, "COFFER_SOCKET": c.socket_path}
    target = tmp_path / "m.bin"
    done = subprocess.run(
        [sys.executable, str(program), "m.bin", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data
    assert "m.bin version 1: 100000 bytes" in done.stdout
    done = subprocess.run(
        [sys.executable, str(program), "absent.bin", str(tmp_path / "absent")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("fetch_model: ")
    assert sorted(os.listdir(tmp_path)) == ["fetch_model.py", "m.bin"]


def test_a_source_failing_midway_publishes_nothing(c: cc.Client) -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            self.calls += 1
            if self.calls > 3:
                raise OSError(5, "Input/output error")
            b[:] = bytes(len(b))
            return len(b)

    with pytest.raises(OSError, match="Input/output"):
        c.upload("cut", "models", Failing())  # type: ignore[arg-type]  # size unknown
    with pytest.raises(cc.NotFound):
        c.load_bytes("cut")
