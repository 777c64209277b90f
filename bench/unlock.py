"""Benchmark of ``unlock`` beside plain ``docker load``, both in one run on one engine.

It starts its own private dockerd (the test fixture's helper), reference
upstream and cofferd, writes a ``docker save``-shaped tar of one image whose
layer is random bytes (512 MiB by default), seals it as the device archive and
registers its key. Then, taking turns, it times:

- ``docker load -i`` of the plaintext tar (the Debian CLI, same engine);
- ``unlock`` through cofferd's socket, from the call until ``unlock_status``
  says ``ready`` (polled every 20 ms);

removing the image (and syncing the disk) before each run, and keeps each
one's best time. Alongside: the bytes cofferd caused to be written to storage
during the unlock (``write_bytes`` of ``/proc/<pid>/io``; its log goes to a
pipe, so only its files count). Past a 64 KiB allowance for its one small state
record they count as plaintext it could have put on disk, and so do any files
in cofferd's cache, state and temp dirs holding bytes of the layer. And
cofferd's peak RSS during the unlock.

Target (issue 5): unlock <= 1.25x docker load; plaintext bytes on disk: 0.

Usage: .venv/bin/python bench/unlock.py [--size-mib 512] [--repeat 2]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cofferd.binary_split import archive, stream
from cofferd.resources.upstream import ApiClient

# The test suite's fixtures, reused. Imported after cofferd: tests/ holds a
# folder named cofferd that would otherwise shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
upstream_fixture = importlib.import_module("fixtures.upstream")
daemon_fixture = importlib.import_module("fixtures.daemon")
dockerd_fixture = importlib.import_module("fixtures.dockerd")

MiB = 1 << 20
TAG = "coffer-bench/unlock:1"
ARCHIVE_ID = "bench-images"
#: Storage writes allowed for cofferd's state record (a few hundred bytes, fsynced).
RECORD_ALLOWANCE = 64 * 1024


class RandomBytes(io.RawIOBase):
    """``size`` random bytes as a file to read; keeps 64 of them as a marker."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size
        self.marker = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.urandom(n)
        self.left -= n
        if not self.marker and len(data) >= 128:
            self.marker = data[64:128]
        return data


def write_image_tar(path: Path, size: int) -> tuple[str, bytes]:
    """A legacy ``docker save`` tar of one image with one layer of ``size`` random bytes.

    Streams to disk (the layer first to a temp file, for its digest); returns
    the image id and a few bytes from inside the layer, to search for later.
    """
    layer_path = path.with_suffix(".layer")
    data = RandomBytes(size)
    with tarfile.open(layer_path, "w") as layer:
        info = tarfile.TarInfo("blob.bin")
        info.size = size
        info.mode = 0o644
        layer.addfile(info, data)
    digest = hashlib.sha256()
    with layer_path.open("rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        }
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_id}.json", "RepoTags": [TAG], "Layers": ["layer/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, f"{image_id}.json", config)
        tar.add(layer_path, "layer/layer.tar")
        add_bytes(tar, "manifest.json", manifest)
    layer_path.unlink()
    return f"sha256:{image_id}", data.marker


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def copy_log(proc: subprocess.Popen[bytes], path: Path) -> None:
    assert proc.stderr is not None
    with path.open("wb", buffering=0) as out:
        while line := proc.stderr.readline():
            out.write(line)


def proc_field(pid: int, name: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/{name}")


def files_holding(roots: list[Path], marker: bytes) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as f:
                    if any(marker in block for block in iter(lambda: f.read(64 * MiB), b"")):
                        found.append(path)
    return found


def settle(engine: Any) -> None:
    """No image of ours, dirty pages written back: each run starts alike."""
    engine.remove_image(TAG)
    os.sync()


def time_docker_load(engine: Any, tar: Path) -> float:
    settle(engine)
    start = time.perf_counter()
    engine.docker("load", "-i", str(tar), timeout=3600)
    return time.perf_counter() - start


def time_unlock(engine: Any, daemon: Any, reader: Any) -> tuple[float, dict[str, Any]]:
    settle(engine)
    pid = daemon.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS
    written = proc_field(pid, "io", "write_bytes")
    start = time.perf_counter()
    answer = daemon.call("unlock", {"email": reader.email, "password": reader.password})
    assert answer.get("result") == {"state": "authenticating"}, answer
    while (status := daemon.call("unlock_status")["result"])["state"] not in ("ready", "error"):
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if status["state"] != "ready":
        raise RuntimeError(f"unlock failed: {status['error']}")
    return elapsed, {
        "write_bytes": proc_field(pid, "io", "write_bytes") - written,
        "peak_rss_mib": proc_field(pid, "status", "VmHWM") / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="layer size (MiB)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, taking turns")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cub-", dir="/var/tmp"))
    try:
        with (
            dockerd_fixture.PrivateDockerd() as engine,
            upstream_fixture.Upstream.with_new_users(base / "upstream") as server,
        ):
            result = run(engine, server, base, args.size_mib * MiB, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0


def run(engine: Any, server: Any, base: Path, size: int, repeat: int) -> dict[str, Any]:
    (base / "d").mkdir()
    (base / "d" / "tmp").mkdir()
    env = daemon_fixture.daemon_env(
        base / "d", server.url, {"DOCKER_HOST": engine.host, "TMPDIR": str(base / "d" / "tmp")}
    )
    tar = base / "image.tar"
    image_id, marker = write_image_tar(tar, size)
    key = stream.new_key()
    with tar.open("rb") as src, Path(env["COFFER_ARCHIVE_PATH"]).open("wb") as dst:
        archive.seal(src, dst, ARCHIVE_ID, key)
    client = ApiClient(server.url)
    client.login(server.publisher.email, server.publisher.password)
    client.put_archive_key(ARCHIVE_ID, key)
    client.close()
    print(f"image tar of {tar.stat().st_size / MiB:.0f} MiB written and sealed", flush=True)

    sock_path = base / "d" / "cofferd.sock"
    stderr_path = base / "d" / "stderr.log"
    # cofferd logs into a pipe this process copies to the file: so its own
    # write_bytes count what it stores, not its log lines.
    proc = subprocess.Popen(
        [sys.executable, "-m", "cofferd", "--socket", str(sock_path)],
        env=env,
        stderr=subprocess.PIPE,
    )
    copier = threading.Thread(target=copy_log, args=(proc, stderr_path), daemon=True)
    copier.start()
    daemon = daemon_fixture.CofferdProcess(sock_path, proc, env, base / "d", stderr_path)
    try:
        daemon_fixture.wait_for_health(sock_path, proc, stderr_path)
        loads, unlocks, seen = [], [], []
        for i in range(repeat):
            loads.append(time_docker_load(engine, tar))
            assert engine.client().images.get(TAG).id == image_id
            print(f"run {i + 1}: docker load {loads[-1]:7.2f} s", flush=True)
            elapsed, figures = time_unlock(engine, daemon, server.reader)
            unlocks.append(elapsed)
            seen.append(figures)
            assert engine.client().images.get(TAG).id == image_id
            print(
                f"run {i + 1}: unlock      {elapsed:7.2f} s  (cofferd wrote "
                f"{figures['write_bytes']} bytes, peak RSS {figures['peak_rss_mib']:.0f} MiB)",
                flush=True,
            )
        leftovers = files_holding([base / "d"], marker)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        engine.remove_image(TAG)
    written = max(f["write_bytes"] for f in seen)
    # The only file cofferd writes is its small state record; with the fsync
    # that follows, storage sees a few pages. Anything past RECORD_ALLOWANCE
    # would be unexplained and is counted as plaintext, like any file holding
    # layer bytes.
    plaintext_on_disk = max(0, written - RECORD_ALLOWANCE) + sum(
        p.stat().st_size for p in leftovers
    )
    unlock_s, load_s = min(unlocks), min(loads)
    print(
        f"unlock {unlock_s:.2f} s vs docker load {load_s:.2f} s: {unlock_s / load_s:.2f}x "
        f"(target <= 1.25x); plaintext bytes on disk by cofferd: {plaintext_on_disk} (target 0)"
    )
    return {
        "size_mib": size // MiB,
        "unlock_s": round(unlock_s, 3),
        "docker_load_s": round(load_s, 3),
        "unlock_vs_docker_load": round(unlock_s / load_s, 3),
        "unlock_mib_s": round(size / MiB / unlock_s, 1),
        "docker_load_mib_s": round(size / MiB / load_s, 1),
        "plaintext_bytes_on_disk": plaintext_on_disk,
        "cofferd_write_bytes": written,
        "cofferd_peak_rss_mib": round(max(f["peak_rss_mib"] for f in seen), 1),
        "files_holding_plaintext": [str(p) for p in leftovers],
    }


if __name__ == "__main__":
    raise SystemExit(main())
