"""Random requests over the socket, random fds with them: cofferd answers each
one, never with an internal error, and ends with the fds and threads it began with."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults.conftest import threads_of
from fixtures.daemon import CofferdProcess, read_response

METHODS = ["health", "status", "login", "load", "upload", "unlock", "unlock_status", "rpc.nope"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
params = st.one_of(
    st.dictionaries(
        st.sampled_from(["filename", "folder", "email", "password", "size", "data", "x"]),
        json_values,
        max_size=4,
    ),
    st.lists(json_values, max_size=3),
    json_values,
)
envelopes = st.fixed_dictionaries(
    {"method": st.one_of(st.sampled_from(METHODS), st.text(max_size=12), json_values)},
    optional={"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "params": params},
)


class Conn:
    def __init__(self, daemon: CofferdProcess) -> None:
        self.daemon = daemon
        self.sock = daemon.connect()

    def renew(self) -> None:
        self.sock.close()
        self.sock = self.daemon.connect()


@pytest.fixture(scope="module")
def fuzz_daemon(
    request: pytest.FixtureRequest,
) -> Iterator[CofferdProcess]:
    # One daemon for every example: the module-scoped factory of the fixtures
    # is function-scoped, so start it by hand through the same helper.
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from fixtures.daemon import daemon_env, wait_for_health

    base = Path(tempfile.mkdtemp(prefix="cfz-"))
    env = daemon_env(base, "http://127.0.0.1:9", {"COFFER_UPSTREAM_TIMEOUT": "1"})
    sock_path = base / "cofferd.sock"
    err = base / "stderr.log"
    with err.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cofferd", "--socket", str(sock_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=f,
        )
    wait_for_health(sock_path, proc, err)
    daemon = CofferdProcess(sock_path, proc, env, base, err)
    _baseline[proc.pid] = (daemon.open_fds(), threads_of(proc.pid))
    yield daemon
    daemon.stop()
    assert "Traceback" not in daemon.stderr_text()


def _fds(kinds: list[str]) -> list[int]:
    fds = []
    for kind in kinds:
        if kind == "null":
            fds.append(os.open("/dev/null", os.O_RDWR))
        else:  # a pipe at EOF: its write end closed
            r, w = os.pipe()
            os.close(w)
            fds.append(r)
    return fds


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    envelope=envelopes,
    ident=st.one_of(st.integers(-(2**53), 2**53), st.text(min_size=1, max_size=8)),
    fd_kinds=st.lists(st.sampled_from(["null", "eof"]), max_size=3),
)
def test_every_request_gets_one_answer(
    fuzz_daemon: CofferdProcess, envelope: dict[str, Any], ident: int | str, fd_kinds: list[str]
) -> None:
    conn = _conn(fuzz_daemon)
    line = json.dumps({**envelope, "id": ident}).encode() + b"\n"
    fds = _fds(fd_kinds)
    try:
        if fds:
            socket.send_fds(conn.sock, [line], fds)
        else:
            conn.sock.sendall(line)
    finally:
        for fd in fds:
            os.close(fd)
    method = envelope.get("method")
    answer = read_response(conn.sock, method if isinstance(method, str) else None)
    assert answer.get("id") == ident or (answer.get("id") is None and "error" in answer), answer
    error = answer.get("error")
    if error is not None:
        assert error["code"] != -32603, (envelope, answer)
        if error["code"] == 413:
            conn.renew()
            return
    # The connection goes on after every other error.
    conn.sock.sendall(b'{"jsonrpc":"2.0","method":"health","id":0}\n')
    assert read_response(conn.sock)["result"]["status"] == "ok"


_conns: dict[int, Conn] = {}
#: pid → (open fds, threads) right after the start.
_baseline: dict[int, tuple[int, int]] = {}


def _conn(daemon: CofferdProcess) -> Conn:
    if daemon.pid not in _conns:
        _conns[daemon.pid] = Conn(daemon)
    return _conns[daemon.pid]


def test_fds_and_threads_back_to_baseline(fuzz_daemon: CofferdProcess) -> None:
    conn = _conns.pop(fuzz_daemon.pid, None)
    if conn is not None:
        conn.sock.close()
    base_fds, base_threads = _baseline[fuzz_daemon.pid]
    end = time.monotonic() + 10
    while time.monotonic() < end:
        fds, threads = fuzz_daemon.open_fds(), threads_of(fuzz_daemon.pid)
        if threads <= base_threads and fds <= base_fds:
            break
        time.sleep(0.1)
    assert threads <= base_threads, (threads, base_threads)
    assert fds <= base_fds, (fds, base_fds)
