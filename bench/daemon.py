"""Benchmark of cofferd over its socket, each figure beside its peer from the same run.

(a) ``load`` of a resource (1 GiB by default), warm cache, through an fd into
    a pipe this process drains, beside the raw streaming decrypt of the same
    bytes in this process (to /dev/null, and into a pipe a child process
    drains: the ceiling of any load through a pipe here); also ``load`` into an fd of
    /dev/null, which shows what cofferd adds without the pipe's two copies
    (on 2 cores the decrypt workers and the pipe copies share the CPU);
(b) calls per second and p99 latency of ``health`` with 32 concurrent clients,
    beside a bare newline-JSON echo server in Python on a Unix socket (thread
    per connection, json.loads + json.dumps per line), driven by the same
    clients: ``--rounds`` runs of ``--seconds`` each, the echo server and
    cofferd in turn, each ratio taken within its round (the machine's load
    drifts between rounds) and the median reported; beside them, the CPU
    time each server spent per call (user + system, from /proc), which a
    busy machine skews less than the rates;
(c) cofferd's peak RSS during (a) (high-water mark reset just before) and its
    RSS while idle;
(d) ``load_memfd`` of the same resource through the client library (``stat``,
    the caller's memfd made and allocated, filled by cofferd, its seals
    checked) beside its ceiling: the lower of raw AES in memory (1 MiB
    ``AESGCM.decrypt_into`` over the same number of bytes) and the fastest
    copy-only path from the warm cache file into a fresh memfd of the same
    size (``pwrite`` from a reused 1 MiB buffer, with or without
    ``fallocate`` first, or ``readinto`` a shared mapping: the best one
    counts). CPU seconds per GiB of this process are printed beside each
    in-process figure.

Targets (issues 4 and 12): load >= 0.85x raw decrypt and >= 0.9x raw decrypt
into a pipe; health >= 0.5x the echo server's calls/s, its p99 <= 1.5x the
echo server's p99 in the same run; peak RSS <= 100 MiB; load_memfd >= 0.7x its
ceiling. It starts its own reference
upstream and cofferd.

Usage: .venv/bin/python bench/daemon.py [--size-mib N] [--seconds S] [--rounds R]
                                        [--rpc-only] [--baseline SOURCE_TREE]
The last line printed is one JSON object (``--rpc-only``: (b) alone; with
``--baseline``, (b) also for that tree's cofferd, in the same rounds).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import mmap
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.client import Client
from cofferd.binary_split.stream import decrypt_file, resource_associated_data
from cofferd.resources.upstream import ApiClient

# The test suite's fixtures, reused. Imported after cofferd: tests/ holds a
# folder named cofferd that would otherwise shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
upstream_fixture = importlib.import_module("fixtures.upstream")
daemon_fixture = importlib.import_module("fixtures.daemon")

MiB = 1 << 20
CLIENT_PROCESSES = 2
CLIENTS = 32
HEALTH = b'{"jsonrpc":"2.0","method":"health","id":1}\n'


# -- the echo server peer ---------------------------------------------------


def echo_server(path: str) -> None:
    """A bare newline-JSON server: what any Python line server costs at least."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)

    def serve(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while chunk := conn.recv(65536):
                buf += chunk
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    request = json.loads(line)
                    reply = {"jsonrpc": "2.0", "result": {"status": "ok"}, "id": request["id"]}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# -- the clients (forked while this process has no other thread) ----------


def client_process(path: str, threads: int, seconds: float, out: Any) -> None:
    """``threads`` connections calling ``health`` back to back; latencies to ``out``."""
    start = threading.Barrier(threads)
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def run(mine: list[float]) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            start.wait()
            deadline = time.perf_counter() + seconds
            while (t0 := time.perf_counter()) < deadline:
                sock.sendall(HEALTH)
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += sock.recv(4096)
                assert json.loads(buf)["result"]["status"] == "ok"
                mine.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=run, args=(mine,)) for mine in latencies]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put([x for mine in latencies for x in mine])


def drive(path: str, seconds: float) -> tuple[float, float]:
    """(calls per second, p99 latency in ms) of ``health`` with CLIENTS connections."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    per = CLIENTS // CLIENT_PROCESSES
    procs = [
        ctx.Process(target=client_process, args=(path, per, seconds, queue))
        for _ in range(CLIENT_PROCESSES)
    ]
    for p in procs:
        p.start()
    latencies = sorted(x for _ in procs for x in queue.get(timeout=seconds + 120))
    for p in procs:
        p.join()
    return len(latencies) / seconds, latencies[int(len(latencies) * 0.99)] * 1000


# -- helpers ----------------------------------------------------------------


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def timed(label: str, size: int, work: Callable[[], object]) -> float:
    """MiB/s of ``work``; printed with this process's CPU seconds per GiB beside it."""
    cpu = time.process_time()
    start = time.perf_counter()
    work()
    rate = size / MiB / (time.perf_counter() - start)
    cpu_per_gib = (time.process_time() - cpu) / (size / (1 << 30))
    print(f"{label:<44} {rate:8.1f} MiB/s  {cpu_per_gib:5.2f} CPU s/GiB here", flush=True)
    return rate


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(600)
    sock.connect(str(path))
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="resource size (MiB)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each RPC run")
    parser.add_argument("--rounds", type=int, default=3, help="RPC runs of each server")
    parser.add_argument("--rpc-only", action="store_true", help="only (b): no resource needed")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="(b) also for the cofferd of this source tree (e.g. a worktree of main), in turn",
    )
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cfb-"))
    rpc = RpcRuns(args.seconds, args.rounds, args.rpc_only, args.baseline)
    try:
        with upstream_fixture.Upstream.with_new_users(base / "upstream") as server:
            return run(server, base, args.size_mib * MiB, rpc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


class RpcRuns:
    """How (b) runs: ``rounds`` runs of ``seconds`` per server; ``only``: nothing else.

    ``baseline``: a source tree whose cofferd runs beside (same load, same
    rounds), for a before/after from one run on a shared machine.
    """

    def __init__(self, seconds: float, rounds: int, only: bool, baseline: Path | None) -> None:
        self.seconds, self.rounds, self.only = seconds, rounds, only
        self.baseline = baseline
        self.echo_pid = 0
        #: (socket path, pid) of the baseline's cofferd, once started.
        self.baseline_daemon: tuple[Path, int] | None = None


def start_baseline(server: Any, base: Path, tree: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """cofferd from the source tree ``tree`` (its daemon/ and client/ first on the path)."""
    (base / "baseline").mkdir()
    env = daemon_fixture.daemon_env(base / "baseline", server.url)
    env["PYTHONPATH"] = os.pathsep.join(str(tree.resolve() / d) for d in ("daemon", "client"))
    sock_path = base / "baseline" / "cofferd.sock"
    err = base / "baseline" / "stderr.log"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cofferd", "--socket", str(sock_path)], env=env, stderr=stderr
        )
    daemon_fixture.wait_for_health(sock_path, proc, err)
    return proc, sock_path


def run(server: Any, base: Path, size: int, rpc: RpcRuns) -> int:
    (base / "d").mkdir()
    env = daemon_fixture.daemon_env(base / "d", server.url)
    sock_path = base / "d" / "cofferd.sock"
    stderr = (base / "d" / "stderr.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "cofferd", "--socket", str(sock_path)], env=env, stderr=stderr
    )
    echo_path = str(base / "echo.sock")
    echo = multiprocessing.get_context("fork").Process(target=echo_server, args=(echo_path,))
    echo.start()
    baseline = None
    try:
        daemon_fixture.wait_for_health(sock_path, daemon, base / "d" / "stderr.log")
        if rpc.baseline is not None:
            baseline, baseline_sock = start_baseline(server, base, rpc.baseline)
            rpc.baseline_daemon = (baseline_sock, baseline.pid)
        while not os.path.exists(echo_path):
            if not echo.is_alive():
                raise RuntimeError("the echo server did not start")
            time.sleep(0.01)
        rpc.echo_pid = echo.pid or 0
        if rpc.only:
            print(json.dumps(measure_rpc(daemon.pid, sock_path, echo_path, rpc)))
            return 0
        return measure_all(server, daemon.pid, sock_path, echo_path, size, rpc)
    finally:
        echo.terminate()
        echo.join()
        for proc in (daemon, baseline):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        stderr.close()


def measure_all(
    server: Any, pid: int, sock_path: Path, echo_path: str, size: int, rpc_runs: RpcRuns
) -> int:
    account = server.publisher
    block = os.urandom(8 * MiB)
    with connect(sock_path) as sock:
        login = {"email": account.email, "password": account.password}
        assert daemon_fixture.rpc(sock, "login", login)["result"]
        chunks = (block[: min(8 * MiB, size - i)] for i in range(0, size, 8 * MiB))
        up = daemon_fixture.upload_via_pipe(sock, {"filename": "bench.bin", "size": size}, chunks)
        assert up["result"]["size"] == size, up
        data_len = drain_load(sock)  # warms the cache
        assert data_len == size
    print(f"resource of {size // MiB} MiB uploaded through cofferd, cache warm", flush=True)
    idle_rss = rss_mib(pid, "VmRSS")

    # (a) load through a pipe, beside the raw decrypt of the same bytes.
    client = ApiClient(server.url, timeout=60)
    client.login(account.email, account.password)
    info = client.get_resource("models", "bench.bin")
    client.close()
    [blob] = server.blob_paths()
    ad = resource_associated_data("models", "bench.bin")

    def raw_decrypt() -> None:
        with blob.open("rb", buffering=0) as big, open(os.devnull, "wb", buffering=0) as out:
            decrypt_file(big, out, info.key, ad, prefix=info.small)

    def raw_decrypt_into_pipe() -> None:
        # The ceiling of a load into a pipe on this machine: the same decrypt,
        # into a 1 MiB pipe that another process drains as drain_load does.
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MiB)
        drainer = multiprocessing.get_context("fork").Process(target=drain_fd, args=(r, w))
        drainer.start()
        os.close(r)
        with blob.open("rb", buffering=0) as big, open(w, "wb", buffering=0) as out:
            decrypt_file(big, out, info.key, ad, prefix=info.small)
        drainer.join()

    decrypt_rate = timed("raw streaming decrypt (in process)", size, raw_decrypt)
    pipe_rate = timed("raw streaming decrypt into a pipe", size, raw_decrypt_into_pipe)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset cofferd's VmHWM
    with connect(sock_path) as sock:
        load_rate = timed("load via cofferd into a pipe", size, lambda: drain_load(sock))
        peak_rss = rss_mib(pid, "VmHWM")
        # The same without the pipe's two copies: what cofferd itself adds.
        null_rate = timed("load via cofferd into /dev/null", size, lambda: null_load(sock))
    print(f"cofferd RSS: idle {idle_rss:.1f} MiB, peak during load {peak_rss:.1f} MiB")

    # (d) load into the caller's memfd, beside the lower of raw AES and the
    # fastest copy of the warm cache file into a fresh memfd.
    [cached] = [p for p in (sock_path.parent / "cache").rglob("*") if p.is_file()]
    aead = AESGCM(info.key)
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, os.urandom(MiB - 16), None)
    plain_out = bytearray(MiB - 16)

    def raw_aes() -> None:
        for _ in range(size // MiB):
            aead.decrypt_into(nonce, sealed, None, plain_out)

    def copy_pwrite(allocate: bool) -> Callable[[], None]:
        def go() -> None:
            fd = os.memfd_create("ceiling", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                os.ftruncate(fd, size)
                if allocate:
                    os.posix_fallocate(fd, 0, size)
                buffer = memoryview(bytearray(MiB))
                at = 0
                with cached.open("rb", buffering=0) as src:
                    while (got := src.readinto(buffer)) and at < size:
                        at += os.pwrite(fd, buffer[: min(got, size - at)], at)
            finally:
                os.close(fd)

        return go

    def copy_mapping() -> None:
        fd = os.memfd_create("ceiling", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as m, cached.open("rb", buffering=0) as src:
                view = memoryview(m)
                at = 0
                while at < size and (got := src.readinto(view[at : at + MiB])):
                    at += got
                view.release()
        finally:
            os.close(fd)

    def load_memfd() -> None:
        with Client(sock_path, timeout=600) as c, c.load_memfd("bench.bin") as memfd:
            assert memfd.size == size

    aes_rate = timed("raw AES in memory", size, raw_aes)
    copies = {
        "pwrite from a reused buffer": copy_pwrite(False),
        "fallocate, then pwrite": copy_pwrite(True),
        "readinto a mapping": copy_mapping,
    }
    copy_rates = {
        name: timed(f"copy into a memfd: {name}", size, go) for name, go in copies.items()
    }
    best_copy = max(copy_rates, key=lambda name: copy_rates[name])
    memfd_ceiling = min(aes_rate, copy_rates[best_copy])
    memfd_rate = timed("load_memfd via cofferd", size, load_memfd)
    print(
        f"load_memfd vs its ceiling ({memfd_ceiling:.0f} MiB/s: the lower of raw AES and"
        f" the best copy, {best_copy}): {memfd_rate / memfd_ceiling:.2f}x"
    )

    # (b) health under 32 clients, beside the echo server.
    rpc = measure_rpc(pid, sock_path, echo_path, rpc_runs)

    result = {
        "size_mib": size // MiB,
        "load_mib_s": round(load_rate, 1),
        "decrypt_mib_s": round(decrypt_rate, 1),
        "load_vs_decrypt": round(load_rate / decrypt_rate, 3),
        "decrypt_pipe_mib_s": round(pipe_rate, 1),
        "load_vs_decrypt_pipe": round(load_rate / pipe_rate, 3),
        "load_devnull_mib_s": round(null_rate, 1),
        "load_devnull_vs_decrypt": round(null_rate / decrypt_rate, 3),
        **{k: v for k, v in rpc.items() if k != "targets_met"},
        "load_memfd_mib_s": round(memfd_rate, 1),
        "memfd_ceiling_mib_s": round(memfd_ceiling, 1),
        "memfd_aes_mib_s": round(aes_rate, 1),
        "memfd_copy_mib_s": {name: round(rate, 1) for name, rate in copy_rates.items()},
        "load_memfd_vs_ceiling": round(memfd_rate / memfd_ceiling, 3),
        "peak_rss_mib": round(peak_rss, 1),
        "idle_rss_mib": round(idle_rss, 1),
        "targets_met": {
            "load_vs_decrypt>=0.85": load_rate / decrypt_rate >= 0.85,
            "load_vs_decrypt_pipe>=0.9": load_rate / pipe_rate >= 0.9,
            "load_memfd_vs_ceiling>=0.7": memfd_rate / memfd_ceiling >= 0.7,
            **rpc["targets_met"],
            "peak_rss_mib<=100": peak_rss <= 100,
        },
    }
    print(json.dumps(result))
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_rpc(pid: int, sock_path: Path, echo_path: str, runs: RpcRuns) -> dict[str, Any]:
    """(b): the echo server and cofferd in turn, ``runs.rounds`` times; ratios per round."""
    servers = [("echo", echo_path, runs.echo_pid), ("rpc", str(sock_path), pid)]
    if runs.baseline_daemon is not None:
        servers.append(("baseline", str(runs.baseline_daemon[0]), runs.baseline_daemon[1]))
    labels = {"echo": "echo server", "rpc": "cofferd health", "baseline": "baseline health"}
    rounds = []
    for n in range(runs.rounds):
        pair = {}
        for name, path, server_pid in servers:
            before = cpu_seconds(server_pid)
            rate, p99 = drive(path, runs.seconds)
            cpu_us = (cpu_seconds(server_pid) - before) / (rate * runs.seconds) * 1e6
            pair[name] = (rate, p99, cpu_us)
            label = labels[name]
            print(
                f"round {n}: {label:<15} {rate:8.0f} calls/s  p99 {p99:6.2f} ms"
                f"  CPU {cpu_us:5.1f} us/call",
                flush=True,
            )
        rounds.append(pair)

    vs_echo = statistics.median([r["rpc"][0] / r["echo"][0] for r in rounds])
    p99_vs_echo = statistics.median([r["rpc"][1] / r["echo"][1] for r in rounds])
    p99 = statistics.median([r["rpc"][1] for r in rounds])
    baseline = {}
    if runs.baseline_daemon is not None:
        baseline = {
            "baseline_vs_echo": round(
                statistics.median([r["baseline"][0] / r["echo"][0] for r in rounds]), 3
            ),
            "baseline_p99_vs_echo": round(
                statistics.median([r["baseline"][1] / r["echo"][1] for r in rounds]), 2
            ),
            "baseline_cpu_us_per_call": round(
                statistics.median([r["baseline"][2] for r in rounds]), 1
            ),
        }
    return {
        **baseline,
        "rpc_per_s": round(statistics.median([r["rpc"][0] for r in rounds])),
        "echo_per_s": round(statistics.median([r["echo"][0] for r in rounds])),
        "rpc_vs_echo": round(vs_echo, 3),
        "rpc_p99_ms": round(p99, 2),
        "echo_p99_ms": round(statistics.median([r["echo"][1] for r in rounds]), 2),
        "rpc_p99_vs_echo": round(p99_vs_echo, 2),
        "rpc_cpu_us_per_call": round(statistics.median([r["rpc"][2] for r in rounds]), 1),
        "echo_cpu_us_per_call": round(statistics.median([r["echo"][2] for r in rounds]), 1),
        "rpc_rounds": runs.rounds,
        "targets_met": {
            "rpc_vs_echo>=0.5": vs_echo >= 0.5,
            "rpc_p99_ms<=5": p99 <= 5,
            "rpc_p99_vs_echo<=1.5": p99_vs_echo <= 1.5,
        },
    }


def drain_load(sock: socket.socket) -> int:
    """``load`` into a pipe, drained with big reads; the byte count (checked with the result)."""
    r, w = os.pipe()
    request = {"jsonrpc": "2.0", "method": "load", "params": {"filename": "bench.bin"}, "id": 9}
    socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [w])
    os.close(w)
    total = 0
    buf = bytearray(MiB)
    with open(r, "rb", buffering=0) as pipe:
        while n := pipe.readinto(buf):
            total += n
    response = daemon_fixture.read_response(sock)
    assert response["result"]["size"] == total, response
    return total


def drain_fd(r: int, w: int) -> None:
    """Read ``r`` to EOF with 1 MiB reads (in a child: ``w`` is the parent's end)."""
    os.close(w)
    buf = bytearray(MiB)
    with open(r, "rb", buffering=0) as pipe:
        while pipe.readinto(buf):
            pass


def null_load(sock: socket.socket) -> None:
    with open(os.devnull, "wb") as sink:
        response = daemon_fixture.rpc(sock, "load", {"filename": "bench.bin"}, fds=[sink.fileno()])
    assert "result" in response, response


if __name__ == "__main__":
    raise SystemExit(main())
