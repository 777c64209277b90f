"""Benchmark of the reference upstream's CDN: GET (sendfile) and PUT of one big part.

Beside them, in the same run, the peer they are compared with: AES-256-GCM
decryption of the same number of bytes in 1 MiB segments on one core (what a
load does with the bytes the CDN sends). The CDN should not be what limits a
cold load: GET well above the decrypt.

- ``get_raw``: one GET read with ``recv_into`` into a reused buffer (the server's speed).
- ``get_requests``: one GET read with ``requests`` ``iter_content(1 MiB)`` (a client's).
- ``put_raw``: one PUT sent with ``sendfile`` (the server reads, hashes, writes, fsyncs).
- ``put_requests``: one PUT with ``requests`` from a file (http.client sends 8 KiB blocks).

And the ceiling of the machine: the same bytes sent with ``sendfile`` from one
thread to another over loopback TCP with no HTTP at all.

Usage: .venv/bin/python bench/upstream_cdn.py [--size-mib N]   (default 1024)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
upstream_fixture = importlib.import_module("fixtures.upstream")

MiB = 1 << 20


def server_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def get_raw(url: str, size: int) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        got = len(head.partition(b"\r\n\r\n")[2])
        while got < size:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError("short read")
            got += n


def put_raw(url: str, source: Path, size: int) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock, source.open("rb") as f:
        head = (
            f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.sendfile(f)
        answer = sock.recv(4096)
    if not answer.startswith(b"HTTP/1.1 201 "):
        raise RuntimeError(answer.decode(errors="replace"))


def loopback_ceiling(source: Path, size: int) -> float:
    """Seconds to move ``size`` bytes of ``source`` over loopback TCP with sendfile."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def send() -> None:
            conn, _ = listener.accept()
            with conn, source.open("rb") as f:
                conn.sendfile(f, 0, size)

        sender = threading.Thread(target=send)
        sender.start()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            view = memoryview(bytearray(4 * MiB))
            start = time.perf_counter()
            got = 0
            while got < size and (n := sock.recv_into(view)):
                got += n
            elapsed = time.perf_counter() - start
        sender.join()
    return elapsed


def get_requests(url: str, size: int) -> None:
    got = 0
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        for chunk in response.iter_content(MiB):
            got += len(chunk)
    if got != size:
        raise RuntimeError("short read")


def decrypt(ciphertext_segment: bytes, size: int) -> None:
    aead = AESGCM(bytes(32))
    nonce = bytes(12)
    for _ in range(size // len(ciphertext_segment)):
        aead.decrypt(nonce, ciphertext_segment, None)


def timed(work: object, *args: object) -> float:
    start = time.perf_counter()
    work(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    size = parser.parse_args().size_mib * MiB

    base = Path(tempfile.mkdtemp(prefix="coffer-bench-cdn-"))
    try:
        source = base / "big.bin"
        with source.open("wb") as f:
            block = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(block)
        with source.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()

        with upstream_fixture.Upstream.with_new_users(base / "data") as server:
            headers = server.auth(server.publisher)
            begun = requests.post(
                f"{server.url}/v1/resources/bench/big/uploads", json={}, headers=headers, timeout=30
            ).json()
            put_raw_s = timed(put_raw, begun["big_url"], source, size)
            with source.open("rb") as f:
                start = time.perf_counter()
                put = requests.put(begun["big_url"], data=f, timeout=600)
                put_requests_s = time.perf_counter() - start
            put.raise_for_status()
            requests.post(
                f"{server.url}/v1/resources/bench/big/uploads/{begun['upload_id']}/commit",
                json={
                    "small": base64.b64encode(bytes(40)).decode(),
                    "key": base64.b64encode(bytes(32)).decode(),
                    "big_size": size,
                    "big_sha256": digest,
                    "plaintext_size": size,
                },
                headers=headers,
                timeout=60,
            ).raise_for_status()
            url = requests.get(
                f"{server.url}/v1/resources/bench/big",
                headers=server.auth(server.reader),
                timeout=30,
            ).json()["big_url"]
            get_raw(url, size)  # page cache warm, like a blob served before
            raw_s = timed(get_raw, url, size)
            requests_s = timed(get_requests, url, size)
            segment = AESGCM(bytes(32)).encrypt(bytes(12), bytes(MiB - 16), None)
            decrypt_s = timed(decrypt, segment, size)
            ceiling_s = loopback_ceiling(source, size)
            assert server.pid is not None
            rss = server_peak_rss_mib(server.pid)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    mib = size / MiB
    figures = {
        "size_mib": mib,
        "cdn_get_raw_mib_s": round(mib / raw_s, 1),
        "cdn_get_requests_mib_s": round(mib / requests_s, 1),
        "cdn_put_raw_mib_s": round(mib / put_raw_s, 1),
        "cdn_put_requests_mib_s": round(mib / put_requests_s, 1),
        "decrypt_mib_s": round(mib / decrypt_s, 1),
        "loopback_sendfile_mib_s": round(mib / ceiling_s, 1),
        "get_raw_vs_loopback": round(ceiling_s / raw_s, 2),
        "get_raw_vs_decrypt": round(decrypt_s / raw_s, 2),
        "get_requests_vs_decrypt": round(decrypt_s / requests_s, 2),
        "server_peak_rss_mib": round(rss, 1),
    }
    for name, value in figures.items():
        print(f"{name:>26}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
