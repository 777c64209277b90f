"""``cofferd`` as a program: its socket, socket activation, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coffer.protocol import ErrorCode
from cofferd import __version__
from fixtures.daemon import (
    CofferdProcess,
    daemon_env,
    load_via_pipe,
    rpc,
    upload_via_pipe,
)
from fixtures.upstream import Upstream

NO_UPSTREAM = "http://127.0.0.1:9"
MIB = 1024 * 1024


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir with a short path, for sockets (AF_UNIX paths max out at 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cfm-"))
    yield path
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def run_cofferd(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cofferd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_version() -> None:
    done = run_cofferd(["--version"], dict(os.environ))
    assert done.returncode == 0
    assert done.stdout.strip() == f"cofferd {__version__}"


def test_bad_settings_exit_2_with_one_line(short_dir: Path) -> None:
    env = daemon_env(short_dir, "ftp://nowhere")
    done = run_cofferd(["--socket", str(short_dir / "s")], env)
    assert done.returncode == 2
    assert done.stderr.strip() == "cofferd: upstream_url must start with http:// or https://"
    missing = run_cofferd(["--config", str(short_dir / "none.toml")], env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_a_stale_socket_file_is_replaced(
    cofferd: Callable[..., CofferdProcess], short_dir: Path
) -> None:
    first = cofferd(upstream_url=NO_UPSTREAM)
    path = first.socket_path
    # SIGKILL leaves the socket file behind with no one listening.
    first.stop(signal.SIGKILL)
    assert path.exists()
    env = dict(first.env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cofferd", "--socket", str(path)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(str(path))
                    assert rpc(sock, "health")["result"]["status"] == "ok"
                    break
            except (ConnectionRefusedError, FileNotFoundError):
                assert time.monotonic() < deadline
                assert proc.poll() is None
                time.sleep(0.05)
        assert path.stat().st_mode & 0o777 == 0o660
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"Traceback" not in err
    assert not path.exists()  # its own socket file goes with it


def test_a_live_socket_is_refused(cofferd: Callable[..., CofferdProcess], short_dir: Path) -> None:
    running = cofferd(upstream_url=NO_UPSTREAM)
    done = run_cofferd(["--socket", str(running.socket_path)], running.env)
    assert done.returncode == 1
    assert "already serves" in done.stderr
    assert running.call("health")["result"]["status"] == "ok"  # untouched

    not_a_socket = short_dir / "file"
    not_a_socket.write_text("keep me")
    done = run_cofferd(["--socket", str(not_a_socket)], running.env)
    assert done.returncode == 1
    assert "not a socket" in done.stderr
    assert not_a_socket.read_text() == "keep me"

    done = run_cofferd(["--socket", str(short_dir / "no" / "dir" / "s")], running.env)
    assert done.returncode == 1
    assert "does not exist" in done.stderr


def test_socket_activation(short_dir: Path) -> None:
    path = short_dir / "activated.sock"
    env = daemon_env(short_dir, NO_UPSTREAM)
    command = ["systemd-socket-activate", "-l", str(path)]
    for name in ("COFFER_CONFIG", "COFFER_UPSTREAM_URL", "COFFER_CACHE_DIR", "COFFER_STATE_DIR"):
        command += ["-E", f"{name}={env[name]}"]
    command += ["-E", f"PYTHONPATH={os.pathsep.join(sys.path)}"]
    command += [sys.executable, "-m", "cofferd", "--socket", str(short_dir / "unused.sock")]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not path.exists():
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(path))  # systemd-socket-activate starts cofferd now
            assert rpc(sock, "health")["result"]["status"] == "ok"
            assert rpc(sock, "status")["result"]["model_cache_dir"] == env["COFFER_CACHE_DIR"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not (short_dir / "unused.sock").exists()  # it served the socket it was given
    assert b"the socket systemd passed" in err
    assert b"Traceback" not in err


@pytest.mark.slow
def test_sigterm_during_a_256_mib_load(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream
) -> None:
    size = 256 * MIB
    daemon = cofferd(env={"COFFER_SHUTDOWN_GRACE": "1"})
    account = upstream.publisher
    assert daemon.call("login", {"email": account.email, "password": account.password})["result"]
    block = os.urandom(MIB)
    with daemon.connect() as sock:
        done = upload_via_pipe(
            sock, {"filename": "huge.bin", "size": size}, (block for _ in range(size // MIB))
        )
        assert done["result"]["size"] == size
    daemon.sign(done["result"])

    sock = daemon.connect()
    result: dict = {}

    def slow_reader() -> None:
        # Drains slowly, so the load is still running when the grace ends.
        data, response = load_via_pipe(sock, {"filename": "huge.bin"}, chunk_delay=0.05)
        result["bytes"] = len(data)
        result["response"] = response

    thread = threading.Thread(target=slow_reader)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=30) == 0
    elapsed = time.monotonic() - started
    thread.join(60)
    sock.close()
    # grace (1 s) + the cancel wait (2 s), with room for a loaded machine.
    assert elapsed < 8, f"took {elapsed:.1f}s to stop"
    # The load was cut, and the caller learns it from its answer, never from
    # a success or an EOF: whether the load saw its cancel in time or the
    # transport answered for it (tests/faults/test_stop.py does it often).
    assert result["response"]["error"]["code"] == ErrorCode.SHUTTING_DOWN, result
    assert result["bytes"] < size
    log = daemon.stderr_text()
    assert "stopped" in log
    assert "Traceback" not in log


def test_idle_connections_do_not_hold_up_the_stop(
    cofferd: Callable[..., CofferdProcess],
) -> None:
    daemon = cofferd(upstream_url=NO_UPSTREAM)  # default grace: 10 s
    with daemon.connect() as sock:
        assert rpc(sock, "health")["result"]
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5
        assert sock.recv(1) == b""


CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"jsonrpc": "2.0", "method": "health", "id": 1}\\n')
except BrokenPipeError:  # refused: cofferd answered and closed before our request
    pass
print(s.makefile().readline())
"""


def test_peers_outside_the_user_and_group_are_refused(
    cofferd: Callable[..., CofferdProcess],
) -> None:
    daemon = cofferd(upstream_url=NO_UPSTREAM)
    # Loosen the file mode, as a careless admin might: the per-connection check still holds.
    for path in (daemon.base.parent, daemon.base):
        path.chmod(0o755)
    daemon.socket_path.chmod(0o666)
    nobody = 65534
    answers = {}
    for label, group in (("stranger", nobody), ("member", daemon.socket_path.stat().st_gid)):
        done = subprocess.run(
            ["/usr/bin/python3", "-c", CLIENT, str(daemon.socket_path)],  # stdlib only
            user=nobody,
            group=group,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answers[label] = json.loads(done.stdout)
    assert answers["stranger"]["error"]["code"] == ErrorCode.UNAUTHORIZED
    assert answers["member"]["result"]["status"] == "ok"
    assert "refusing a connection from uid=65534" in daemon.stderr_text()


def test_journald_gets_priorities_and_no_timestamps(
    cofferd: Callable[..., CofferdProcess],
) -> None:
    daemon = cofferd(upstream_url=NO_UPSTREAM, env={"JOURNAL_STREAM": "8:12345"})
    assert daemon.call("nope")["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    daemon.stop()
    lines = daemon.stderr_text().splitlines()
    assert lines
    assert all(line[:3] in ("<6>", "<4>", "<3>") for line in lines), lines
    assert any(line.startswith("<6>cofferd.call: - error -32601 uid=") for line in lines)
    assert any(line.startswith("<6>cofferd.call: health ok uid=") for line in lines)
