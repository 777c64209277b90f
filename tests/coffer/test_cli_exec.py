"""``coffer exec`` as a real subprocess: real consumers read a memfd path, nothing hits a disk."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coffer import client as cc
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

Daemon = Callable[..., CofferdProcess]
COFFER = str(Path(sys.executable).parent / "coffer")
SEGMENT = 1024 * 1024
TIMEOUT = 120


@pytest.fixture
def daemon(cofferd: Daemon, upstream: Upstream) -> CofferdProcess:
    d = cofferd()
    with cc.Client(d.socket_path, timeout=60) as c:
        c.login(upstream.publisher.email, upstream.publisher.password)
    return d


def publish(daemon: CofferdProcess, name: str, data: bytes) -> None:
    # Through a pipe, so the plaintext is never in a file of the test either.
    r, w = os.pipe()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=w,
    )
    os.close(w)
    assert writer.stdin is not None
    writer.stdin.write(data)
    writer.stdin.close()
    with cc.Client(daemon.socket_path, timeout=60) as c, open(r, "rb") as src:
        up = c.upload(name, "models", src)
    assert up["size"] == len(data)
    assert writer.wait(TIMEOUT) == 0
    daemon.sign(up)


def exec_argv(daemon: CofferdProcess, *args: str) -> list[str]:
    return [COFFER, "--socket", str(daemon.socket_path), "exec", *args]


def coffer_exec(
    daemon: CofferdProcess, *args: str, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        exec_argv(daemon, *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def test_sha256sum_and_cmp_read_the_memfd_path(daemon: CofferdProcess) -> None:
    data = os.urandom(3 * SEGMENT + 5)
    publish(daemon, "model.bin", data)
    done = coffer_exec(
        daemon, "--load", "model.bin=MODEL", "--", "sh", "-c", 'sha256sum "$MODEL"; echo "$MODEL"'
    )
    assert done.returncode == 0, done.stderr
    digest, path = done.stdout.decode().split("\n")[:2]
    assert digest.split()[0] == hashlib.sha256(data).hexdigest()
    assert path.startswith("/proc/self/fd/")
    # cmp against a copy of the same bytes on a pipe: equal, and unequal when one differs.
    for tail, status in ((b"", 0), (b"x", 1)):
        feeder = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert feeder.stdin is not None
        assert feeder.stdout is not None
        done_cmp = subprocess.Popen(
            [*exec_argv(daemon, "--load", "model.bin=M"), "--", "sh", "-c", 'cmp -s "$M" -'],
            stdin=feeder.stdout,
        )
        feeder.stdout.close()
        feeder.stdin.write(data + tail)
        feeder.stdin.close()
        assert done_cmp.wait(TIMEOUT) == status
        feeder.wait(TIMEOUT)


def test_a_python_child_opens_seeks_and_mmaps_two_resources(daemon: CofferdProcess) -> None:
    a, b = os.urandom(SEGMENT + 1), os.urandom(1000)
    publish(daemon, "a.bin", a)
    publish(daemon, "b.bin", b)
    child = textwrap.dedent(
        """
        import hashlib, mmap, os, sys
        out = []
        for var in ("A", "B"):
            with open(os.environ[var], "rb") as f:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    out.append(hashlib.sha256(m).hexdigest())
                f.seek(-3, os.SEEK_END)
                out.append(f.read().hex())
        print(" ".join(out))
        """
    )
    done = coffer_exec(
        daemon, "--load", "a.bin=A", "--load", "b.bin=B", "--", sys.executable, "-c", child
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [
        hashlib.sha256(a).hexdigest(),
        a[-3:].hex(),
        hashlib.sha256(b).hexdigest(),
        b[-3:].hex(),
    ]


def test_no_byte_of_the_plaintext_reaches_a_file_system(
    daemon: CofferdProcess, upstream: Upstream
) -> None:
    marker = os.urandom(32).hex().encode()  # found only if these bytes were written
    data = (marker + os.urandom(4096)) * 300
    publish(daemon, "secret.bin", data)
    # The child gets the marker from its environment, not its command line.
    child = "import os; d = open(os.environ['S'], 'rb').read(); assert d.count(os.environb[b'M'])"
    env = {**os.environ, "M": marker.decode()}
    child += " == 300"
    done = coffer_exec(daemon, "--load", "secret.bin=S", "--", sys.executable, "-c", child, env=env)
    assert done.returncode == 0, done.stderr
    roots = {
        Path(tempfile.gettempdir()),
        Path("/var/tmp"),
        Path("/dev/shm"),
        daemon.base,  # the cache and state dirs, the daemon's log
        upstream.data_dir,
    }
    found = [str(p) for root in roots for p in _files(root) if _holds(p, marker)]
    assert found == []


def test_exit_status_and_signals_pass_through(daemon: CofferdProcess) -> None:
    publish(daemon, "m", b"abc")
    assert coffer_exec(daemon, "--load", "m=M", "--", "sh", "-c", "exit 7").returncode == 7
    assert coffer_exec(daemon, "--load", "m=M", "--", "sh", "-c", "kill -9 $$").returncode == 137
    missing = coffer_exec(daemon, "--load", "m=M", "--", "no-such-command-here")
    assert missing.returncode == 127
    assert b"command not found" in missing.stderr
    # SIGTERM to coffer exec reaches the child, which reports it and exits 3.
    trap = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [*exec_argv(daemon, "--load", "m=M"), "--", "sh", "-c", trap],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    with proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 3
        assert proc.stdout.read() == b"got-term\n"


def test_bad_uses_are_refused_before_anything_runs(daemon: CofferdProcess) -> None:
    done = coffer_exec(daemon, "--load", "m=1BAD", "--", "true")
    assert done.returncode == 2
    assert b"NAME=VAR" in done.stderr
    assert coffer_exec(daemon, "--load", "m=M").returncode == 2
    missing = coffer_exec(daemon, "--load", "nothing-here=M", "--", "touch", "/tmp/ran")
    assert missing.returncode == 5
    assert b"not found" in missing.stderr.lower()


def _files(root: Path) -> list[Path]:
    out = []
    deadline = time.monotonic() + 60
    for dirpath, _, names in os.walk(root):
        if time.monotonic() > deadline:
            raise TimeoutError(f"walking {root} took over a minute")
        out.extend(Path(dirpath, n) for n in names)
    return out


def _holds(path: Path, marker: bytes) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > 1 << 30:
            return False
        with path.open("rb") as f:
            tail = b""
            while chunk := f.read(1 << 20):
                if marker in tail + chunk:
                    return True
                tail = chunk[-len(marker) :]
    except OSError:
        return False
    return False
