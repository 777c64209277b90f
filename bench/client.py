"""Benchmark of the coffer client library and CLI, each beside a bare client in the same run.

(a) ``load`` of a resource (256 MiB by default, warm cache) with
    ``coffer.client.Client.load`` into a sink that drops the bytes, beside a
    bare client: raw socket, ``send_fds``, a pipe read with ``os.readv`` into
    one buffer, nothing else;
(b) ``coffer load NAME -o -`` with stdout on /dev/null, the whole CLI process
    (its start, about 70 ms here, included);
(c) ``upload`` of the same size from a page-cached file with
    ``Client.upload``, beside a bare client feeding the pipe with ``os.write``
    from memory.

What it shows: the library's own cost on top of what cofferd does (both sides
share cofferd's decrypt/encrypt, so a ratio near 1 means the client is not
the bottleneck). It starts its own reference upstream and cofferd.

Usage: .venv/bin/python bench/client.py [--size-mib N] [--runs R]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coffer.client import Client

DEVNULL = subprocess.DEVNULL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
upstream_fixture = importlib.import_module("fixtures.upstream")
daemon_fixture = importlib.import_module("fixtures.daemon")

MiB = 1 << 20


class Sink:
    """A binary file that drops what it is given."""

    def write(self, b: Any) -> int:
        return len(b)


def bare_load(path: Path, name: str) -> int:
    """The least a client must do: send the request with a pipe end, drain, read the answer."""
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        line = {"jsonrpc": "2.0", "method": "load", "params": {"filename": name}, "id": 1}
        socket.send_fds(sock, [json.dumps(line).encode() + b"\n"], [w])
        os.close(w)
        buf = bytearray(MiB)
        total = 0
        while n := os.readv(r, [buf]):
            total += n
        os.close(r)
        answer = b""
        while not answer.endswith(b"\n"):
            answer += sock.recv(65536)
    assert json.loads(answer)["result"]["size"] == total
    return total


def bare_upload(path: Path, name: str, block: bytes, size: int) -> None:
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        params = {"filename": name, "size": size}
        line = {"jsonrpc": "2.0", "method": "upload", "params": params, "id": 1}
        socket.send_fds(sock, [json.dumps(line).encode() + b"\n"], [r])
        os.close(r)

        def feed() -> None:
            view = memoryview(block)
            left = size
            while left:
                left -= os.write(w, view[: min(left, len(view))])
            os.close(w)

        feeder = threading.Thread(target=feed)
        feeder.start()
        answer = b""
        while not answer.endswith(b"\n"):
            answer += sock.recv(65536)
        feeder.join()
    assert json.loads(answer)["result"]["size"] == size


def best(label: str, size: int, runs: int, work: Callable[[], object]) -> float:
    """The best of ``runs`` rates in MiB/s: the machine is shared, so noise only slows."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        rates.append(size / MiB / (time.perf_counter() - start))
    print(f"{label:<40} {max(rates):8.1f} MiB/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    return max(rates)


def measure(sock: Path, server: Any, base: Path, size: int, runs: int) -> dict[str, float]:
    block = os.urandom(8 * MiB)
    src = base / "model.bin"
    with src.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    with Client(sock, timeout=600) as c:
        c.login(server.publisher.email, server.publisher.password)
        with src.open("rb") as f:
            c.upload("model.bin", "models", f)
        c.load("model.bin", "models", Sink())  # type: ignore[arg-type]  # warms the cache
        print(f"resource: {size / MiB:.0f} MiB, warm cache; best of {runs}")
        lib = best("load: coffer.client", size, runs, lambda: c.load("model.bin", "models", Sink()))  # type: ignore[arg-type]
        bare = best("load: bare socket + pipe", size, runs, lambda: bare_load(sock, "model.bin"))
        cli_cmd = [
            str(Path(sys.executable).parent / "coffer"),
            "--socket",
            str(sock),
            "load",
            "model.bin",
            "-o",
            "-",
        ]
        cli = best(
            "load: coffer CLI -o - > /dev/null",
            size,
            runs,
            lambda: subprocess.run(cli_cmd, stdout=DEVNULL, stderr=DEVNULL, check=True),
        )

        def up() -> None:
            with src.open("rb") as f:
                c.upload("up.bin", "models", f)

        up_lib = best("upload: coffer.client from a file", size, runs, up)
        up_bare = best(
            "upload: bare socket + pipe from memory",
            size,
            runs,
            lambda: bare_upload(sock, "up-bare.bin", block, size),
        )
    return {
        "size_mib": size / MiB,
        "load_mib_s": round(lib, 1),
        "bare_load_mib_s": round(bare, 1),
        "load_vs_bare": round(lib / bare, 3),
        "cli_load_mib_s": round(cli, 1),
        "cli_vs_bare": round(cli / bare, 3),
        "upload_mib_s": round(up_lib, 1),
        "bare_upload_mib_s": round(up_bare, 1),
        "upload_vs_bare": round(up_lib / up_bare, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="resource size (MiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the best counts)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cfc-"))
    try:
        with upstream_fixture.Upstream.with_new_users(base / "upstream") as server:
            (base / "d").mkdir()
            env = daemon_fixture.daemon_env(base / "d", server.url)
            sock = base / "d" / "cofferd.sock"
            with (base / "d" / "stderr.log").open("wb") as stderr:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "cofferd", "--socket", str(sock)],
                    env=env,
                    stderr=stderr,
                )
            try:
                daemon_fixture.wait_for_health(sock, daemon, base / "d" / "stderr.log")
                figures = measure(sock, server, base, args.size_mib * MiB, args.runs)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
