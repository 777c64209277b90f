"""The big-part cache on a real directory: verified stores, eviction, faults."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from online import load, managed_cache

from cofferd.resources.cache import BigPartCache
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import upload
from cofferd.resources.upstream import ApiClient, RetryPolicy
from cofferd.resources.wire import ResourceInfo
from fixtures.upstream import Upstream

BODY = b"big part bytes" * 1000


def info_for(version: int, body: bytes = BODY, name: str = "m.bin") -> ResourceInfo:
    return ResourceInfo(
        folder="models",
        name=name,
        version=version,
        small=b"",
        key=bytes(32),
        big_url="http://127.0.0.1:9/cdn/x",
        big_size=len(body),
        big_sha256=hashlib.sha256(body).hexdigest(),
        plaintext_size=0,
    )


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def store(cache: BigPartCache, info: ResourceInfo, body: bytes = BODY) -> Path:
    fd, tmp = cache.new_temporary(info)
    with open(fd, "wb") as f:
        f.write(body)
    return cache.install(info, tmp)


def test_store_then_lookup(tmp_path: Path):
    cache = BigPartCache(tmp_path)
    info = info_for(1)
    assert cache.lookup(info) is None
    path = store(cache, info)
    assert cache.lookup(info) == path
    assert path.read_bytes() == BODY
    assert files(cache.root) == [f"models/m.bin/1-{info.big_sha256}"]


def test_newer_version_evicts_older_not_newer(tmp_path: Path):
    cache = BigPartCache(tmp_path)
    store(cache, info_for(1))
    store(cache, info_for(3))
    assert cache.lookup(info_for(1)) is None
    # A load that raced with an older answer stores version 2 late: 3 stays.
    store(cache, info_for(2))
    assert cache.lookup(info_for(3)) is not None
    store(cache, info_for(1, name="other.bin"))  # another resource is left alone
    assert cache.lookup(info_for(2)) is not None
    assert cache.lookup(info_for(1, name="other.bin")) is not None


def test_wrong_size_entry_is_evicted_on_lookup(tmp_path: Path):
    cache = BigPartCache(tmp_path)
    path = store(cache, info_for(1))
    os.truncate(path, 10)
    assert cache.lookup(info_for(1)) is None
    assert not path.exists()


def test_a_new_cache_removes_what_a_crashed_download_left(tmp_path: Path):
    cache = BigPartCache(tmp_path)
    finished = store(cache, info_for(1))
    # A daemon that dies mid-download: no commit, no abort, no cleanup.
    crash = f"""
import os, sys
from pathlib import Path
from cofferd.resources.cache import BigPartCache
from cofferd.resources.wire import ResourceInfo
info = ResourceInfo(**{dataclasses.asdict(info_for(2))!r})
os.write(BigPartCache(Path(sys.argv[1])).new_temporary(info)[0], b"half a big part")
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", crash, str(tmp_path)], check=True, timeout=60)
    [leftover] = [p for p in cache.root.rglob(".tmp-*")]

    BigPartCache(tmp_path)  # the next daemon start

    assert not leftover.exists()
    assert files(cache.root) == [str(finished.relative_to(cache.root))]
    assert finished.read_bytes() == BODY


def test_remove_temporary_counts_what_it_removed(tmp_path: Path):
    cache = BigPartCache(tmp_path)
    assert cache.remove_temporary() == 0
    store(cache, info_for(1))
    (cache.root / "models" / "m.bin" / ".tmp-left-by-a-crash").write_bytes(b"x")
    assert cache.remove_temporary() == 1
    assert len(files(cache.root)) == 1


@pytest.fixture
def clients(upstream: Upstream):
    made = []
    for account in (upstream.publisher, upstream.reader):
        client = ApiClient(upstream.url, timeout=10, retry=RetryPolicy(2, 0.05))
        client.login(account.email, account.password)
        made.append(client)
    yield made
    for client in made:
        client.close()


def managed(cache_dir: Path) -> ManagedCache:
    return managed_cache(cache_dir, cache_dir.parent / "state" / "index.sqlite3")


def test_load_without_a_usable_cache_dir_still_streams(clients, tmp_path: Path):
    publisher, reader = clients
    plain = os.urandom(2 << 20)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    (tmp_path / "big").write_bytes(b"a file where the cache's directory should be")
    cache = managed(tmp_path)
    out = io.BytesIO()
    assert not load(reader, cache, "models", "m.bin", out).from_cache
    assert out.getvalue() == plain
    assert cache.status()["last_uncached"]["name"] == "m.bin"


def test_reader_hanging_up_does_not_stop_the_download(clients, tmp_path: Path):
    publisher, reader = clients
    plain = os.urandom(3 << 20)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    cache = managed(tmp_path)
    with open(write_fd, "wb", buffering=0) as out, pytest.raises(BrokenPipeError):
        load(reader, cache, "models", "m.bin", out)
    # The download is the cache's, not the caller's: it lands, authenticated
    # by the download's own pass since no reader finished one.
    info = reader.get_resource("models", "m.bin")
    deadline = time.monotonic() + 30
    while cache.big.lookup(info) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.big.lookup(info) is not None
    out2 = io.BytesIO()
    assert load(reader, cache, "models", "m.bin", out2).from_cache
    assert out2.getvalue() == plain
