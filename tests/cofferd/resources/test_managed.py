"""The managed cache on the real reference upstream: single flight, room, LRU, pins, disk full."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from online import load, managed_cache, pull

from cofferd.errors import Conflict, NotFound, TooLarge
from cofferd.resources.listing import every_item
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import upload
from cofferd.resources.upstream import ApiClient, RetryPolicy
from fixtures.upstream import Upstream

MiB = 1 << 20
FAST_RETRY = RetryPolicy(retries=2, base_delay=0.05, max_delay=0.1)
#: Seconds a load next to a stalled one may take at most.
BOUND = 30.0


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def client_for(upstream: Upstream, role: str) -> ApiClient:
    account = upstream.publisher if role == "publisher" else upstream.reader
    client = ApiClient(upstream.url, timeout=10, retry=FAST_RETRY)
    client.login(account.email, account.password)
    return client


@pytest.fixture
def publisher(upstream: Upstream) -> Iterator[ApiClient]:
    client = client_for(upstream, "publisher")
    yield client
    client.close()


@pytest.fixture
def reader(upstream: Upstream) -> Iterator[ApiClient]:
    client = client_for(upstream, "reader")
    yield client
    client.close()


@pytest.fixture
def make_cache(tmp_path: Path) -> Callable[..., ManagedCache]:
    def make(**kw: Any) -> ManagedCache:
        cache_dir = kw.pop("cache_dir", tmp_path / "cache")
        return managed_cache(cache_dir, tmp_path / "index.sqlite3", **kw)

    return make


def cdn_gets(upstream: Upstream, at_least: int) -> int:
    deadline = time.monotonic() + 5
    pattern = r" GET /cdn/\S+ 20[06] "
    while len(re.findall(pattern, upstream.log())) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # one too many shows too
    return len(re.findall(pattern, upstream.log()))


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def load_bytes(client: ApiClient, cache: ManagedCache, name: str) -> tuple[bytes, bool]:
    out = io.BytesIO()
    result = load(client, cache, "models", name, out)
    return out.getvalue(), result.from_cache


def publish(client: ApiClient, name: str, size: int, seed: int = 1) -> bytes:
    plain = data(size, seed)
    upload(client, "models", name, io.BytesIO(plain))
    return plain


def in_threads(n: int, work: Callable[[int], bytes]) -> list[bytes]:
    results: list[bytes | None] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_eight_parallel_cold_loads_one_download(publisher, reader, make_cache, upstream):
    plain = publish(publisher, "m.bin", 24 * MiB + 5)
    cache = make_cache()
    outputs = in_threads(8, lambda i: load_bytes(reader, cache, "m.bin")[0])
    assert all(o == plain for o in outputs)
    assert cdn_gets(upstream, 1) == 1
    assert [e.name for e in cache.index.entries()] == ["m.bin"]
    assert len(files(cache.root)) == 1


class Stalled(io.RawIOBase):
    """An output whose reader stopped reading: ``write`` blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.entered.set()
        assert self.release.wait(120), "never released"
        self.data += bytes(b)
        return len(b)


def test_a_reader_that_never_reads_delays_only_itself(publisher, reader, make_cache):
    plain = publish(publisher, "m.bin", 16 * MiB)
    cache = make_cache()
    stalled = Stalled()
    first = threading.Thread(target=load, args=(reader, cache, "models", "m.bin", stalled))
    first.start()
    try:
        assert stalled.entered.wait(BOUND)
        start = time.monotonic()
        assert load_bytes(reader, cache, "m.bin")[0] == plain
        assert time.monotonic() - start < BOUND
        # The stalled caller did not hold the download either: it landed.
        assert cache.big.lookup(reader.get_resource("models", "m.bin")) is not None
    finally:
        stalled.release.set()
        first.join(60)
    assert bytes(stalled.data) == plain


def test_least_recently_used_goes_first_and_pins_stay(publisher, reader, make_cache):
    plains = {n: publish(publisher, n, 4 * MiB, seed=i) for i, n in enumerate("abc")}
    size = reader.get_resource("models", "a").big_size
    cache = make_cache(max_bytes=2 * size + 100)
    load_bytes(reader, cache, "a")
    load_bytes(reader, cache, "b")
    cache.index.set_pinned("models", "a", True)
    assert load_bytes(reader, cache, "c") == (plains["c"], False)
    assert sorted(e.name for e in cache.index.entries()) == ["a", "c"]  # b was the LRU unpinned
    cache.index.set_pinned("models", "a", False)
    load_bytes(reader, cache, "c")  # c used more recently than a
    assert load_bytes(reader, cache, "b") == (plains["b"], False)
    assert sorted(e.name for e in cache.index.entries()) == ["b", "c"]
    assert cache.index.total_size() <= 2 * size + 100


def test_no_room_streams_through_and_says_so(publisher, reader, make_cache, caplog):
    plain = publish(publisher, "big.bin", 8 * MiB)
    cache = make_cache(max_bytes=MiB)
    assert load_bytes(reader, cache, "big.bin") == (plain, False)
    assert load_bytes(reader, cache, "big.bin") == (plain, False)
    assert files(cache.root) == []
    status = cache.status()
    assert status["last_uncached"]["name"] == "big.bin"
    assert "cache_max_bytes" in status["last_uncached"]["reason"]
    assert "not caching models/big.bin" in caplog.text
    with pytest.raises(TooLarge, match="does not fit in the cache"):
        pull(reader, cache, "models", "big.bin")


def test_free_floor_counts(publisher, reader, make_cache):
    plain = publish(publisher, "m.bin", 2 * MiB)
    cache = make_cache(min_free_bytes=10 * MiB, free_bytes=lambda: 11 * MiB)
    assert load_bytes(reader, cache, "m.bin") == (plain, False)
    assert "cache_min_free_bytes" in cache.status()["last_uncached"]["reason"]


def test_entry_in_use_is_not_evicted(publisher, reader, make_cache):
    plain = publish(publisher, "a", 4 * MiB)
    publish(publisher, "b", 4 * MiB, seed=2)
    size = reader.get_resource("models", "a").big_size
    cache = make_cache(max_bytes=size + 100)
    load_bytes(reader, cache, "a")
    stalled = Stalled()
    holder = threading.Thread(target=load, args=(reader, cache, "models", "a", stalled))
    holder.start()
    try:
        assert stalled.entered.wait(BOUND)
        with pytest.raises(Conflict):
            cache.evict("models", "a")
        assert cache.prune(0) == []
        assert load_bytes(reader, cache, "b")[1] is False  # no room: streamed
        assert [e.name for e in cache.index.entries()] == ["a"]
    finally:
        stalled.release.set()
        holder.join(60)
    assert bytes(stalled.data) == plain
    assert [e.name for e in cache.evict("models", "a")] == ["a"]
    with pytest.raises(NotFound):
        cache.evict("models", "a")


def test_loads_during_eviction_and_prune(publisher, reader, make_cache):
    plains = {n: publish(publisher, n, 3 * MiB, seed=i) for i, n in enumerate(["x", "y"])}
    cache = make_cache()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            cache.prune(0)
            for name in plains:
                with contextlib.suppress(Conflict, NotFound):
                    cache.evict("models", name)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        outputs = in_threads(8, lambda i: load_bytes(reader, cache, "xy"[i % 2])[0])
    finally:
        stop.set()
        churner.join(30)
    assert [o == plains["xy"[i % 2]] for i, o in enumerate(outputs)] == [True] * 8
    assert not [p for p in files(cache.root) if p.name.startswith(".")]


def test_pull_pins_and_index_is_rebuilt_at_start(publisher, reader, make_cache, tmp_path):
    plain = publish(publisher, "m.bin", 3 * MiB)
    cache = make_cache()
    result = pull(reader, cache, "models", "m.bin")
    assert (result.size, result.from_cache) == (len(plain), False)
    [entry] = cache.index.entries()
    # Lose the index, leave a crash leftover: a new process rebuilds and cleans.
    cache.index.close()
    for p in tmp_path.glob("index.sqlite3*"):
        p.unlink()
    leftover = cache.root / "models" / "m.bin" / ".tmp-crashed"
    leftover.write_bytes(b"x" * 100)
    again = make_cache()
    assert [(e.name, e.version, e.size) for e in again.index.entries()] == [
        (entry.name, entry.version, entry.size)
    ]
    assert not leftover.exists()
    assert load_bytes(reader, again, "m.bin") == (plain, True)


@pytest.mark.root
def test_disk_full_mid_download(publisher, reader, make_cache, tmp_path, caplog):
    if os.geteuid() != 0:
        pytest.fail("this test needs root (mount -t tmpfs)")
    plain = publish(publisher, "m.bin", 24 * MiB)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(small)], check=True)
    try:
        # The room check believes there is room: the disk fills up mid-download.
        cache = make_cache(cache_dir=small, free_bytes=lambda: 1 << 40)
        outputs = in_threads(3, lambda i: load_bytes(reader, cache, "m.bin")[0])
        assert all(o == plain for o in outputs)
        assert "its loads stream from the CDN" in caplog.text  # ENOSPC did happen
        assert files(small) == []
        assert cache.index.entries() == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_listing_pages_on_the_real_upstream(publisher, reader):
    for name in ("c.bin", "a.bin", "b.bin"):
        publish(publisher, name, 10)
    items = list(every_item(lambda cursor: reader.list_page("models", cursor, limit=1)))
    assert [(i.name, i.version, i.plaintext_size) for i in items] == [
        ("a.bin", 1, 10),
        ("b.bin", 1, 10),
        ("c.bin", 1, 10),
    ]
    assert reader.list_page("nothing-here") == ([], None)
