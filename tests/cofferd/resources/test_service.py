"""load and upload end to end against the real reference upstream on loopback."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from online import load, managed_cache
from scripted_http import ScriptedServer
from tuf.api.metadata import TargetFile

from cofferd.binary_split.stream import SEGMENT_SIZE, resource_associated_data
from cofferd.errors import (
    BadName,
    BadRequest,
    CorruptData,
    NotFound,
    TooLarge,
    Unauthorized,
    UpstreamUnavailable,
)
from cofferd.resources.cache import BigPartCache
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import upload
from cofferd.resources.upstream import ApiClient, RetryPolicy
from cofferd.trust.release import ResourceRelease, SegmentDigests, key_commitment, parse_target
from fixtures.upstream import Upstream

MiB = 1 << 20
FAST_RETRY = RetryPolicy(retries=2, base_delay=0.05, max_delay=0.1)


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def client_for(upstream: Upstream, role: str = "publisher", **kw: object) -> ApiClient:
    account = upstream.publisher if role == "publisher" else upstream.reader
    client = ApiClient(upstream.url, timeout=10, retry=FAST_RETRY, **kw)  # type: ignore[arg-type]
    client.login(account.email, account.password)
    return client


@pytest.fixture
def publisher(upstream: Upstream) -> Iterator[ApiClient]:
    client = client_for(upstream)
    yield client
    client.close()


@pytest.fixture
def reader(upstream: Upstream) -> Iterator[ApiClient]:
    client = client_for(upstream, "reader")
    yield client
    client.close()


@pytest.fixture
def cache(tmp_path: Path) -> ManagedCache:
    return managed_cache(tmp_path / "cache", tmp_path / "index.sqlite3")


def logged(upstream: Upstream, pattern: str, at_least: int) -> int:
    """Requests matching ``pattern`` in the upstream's log, once ``at_least`` are there.

    The server logs a request after its last byte went out, so a client can
    be done before the line is written: wait for it (5 s at most), then a
    little longer so that one too many shows too.
    """
    deadline = time.monotonic() + 5
    while True:
        count = len(re.findall(pattern, upstream.log()))
        if count >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    time.sleep(0.1)
    return len(re.findall(pattern, upstream.log()))


def cdn_gets(upstream: Upstream, at_least: int) -> int:
    return logged(upstream, r" GET /cdn/\S+ 20[06] ", at_least)


def cache_files(cache: BigPartCache) -> list[Path]:
    return sorted(p for p in cache.root.rglob("*") if p.is_file()) if cache.root.exists() else []


def load_bytes(client: ApiClient, cache: BigPartCache, name: str = "m.bin") -> tuple[bytes, bool]:
    out = io.BytesIO()
    result = load(client, cache, "models", name, out)
    assert result.size == len(out.getvalue())
    return out.getvalue(), result.from_cache


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, 2 * MiB + 5])
def test_upload_answers_the_release_of_the_bytes_actually_published(
    publisher, reader, upstream, size
):
    """The target to sign, recomputed from what the upstream stored (small part, key, big part)."""
    upload(publisher, "models", "m.bin", io.BytesIO(data(size, seed=2)))
    result = upload(publisher, "models", "m.bin", io.BytesIO(data(size)))
    stored = reader.get_resource("models", "m.bin")
    big = b"".join(reader.iter_big(stored.big_url, stored.big_size))
    digests = SegmentDigests(SEGMENT_SIZE)
    digests.update(big)
    manifest, segments_sha256 = digests.finish()
    # The upstream stored the manifest the commit carried: the same bytes.
    stored_manifest = requests.get(
        f"{upstream.url}/v1/resources/models/m.bin/versions/2/segments",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )
    assert stored_manifest.status_code == 200
    assert stored_manifest.content == manifest
    assert len(manifest) == 32 * -(-len(big) // SEGMENT_SIZE)
    expected = ResourceRelease(
        folder="models",
        name="m.bin",
        version=2,
        small_size=len(stored.small),
        small_sha256=hashlib.sha256(stored.small).hexdigest(),
        key_commitment=key_commitment(stored.key, resource_associated_data("models", "m.bin")),
        big_size=len(big),
        big_sha256=hashlib.sha256(big).hexdigest(),
        plaintext_size=size,
        segment_size=MiB,
        segments_sha256=segments_sha256,
    )
    assert result.version == stored.version == 2
    assert result.target == {"path": "resources/models/m.bin", **expected.to_target()}
    assert parse_target(TargetFile.from_dict(dict(expected.to_target()), expected.path)) == expected


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1])
def test_round_trip(publisher, reader, cache, upstream, size):
    plain = data(size)
    result = upload(publisher, "models", "m.bin", io.BytesIO(plain))
    assert (result.version, result.size) == (1, size)
    assert load_bytes(reader, cache) == (plain, False)
    assert load_bytes(reader, cache) == (plain, True)
    assert [p.name for p in cache_files(cache)] == [
        f"1-{reader.get_resource('models', 'm.bin').big_sha256}"
    ]


def test_upload_from_a_pipe_and_versions_count_up(publisher, reader, cache):
    plain = data(3 * MiB + 5)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as w:
            for i in range(0, len(plain), 100_000):
                w.write(plain[i : i + 100_000])

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(read_fd, "rb", buffering=0) as r:
        first = upload(publisher, "models", "m.bin", r)
    feeder.join()
    assert first.size == len(plain)
    assert load_bytes(reader, cache) == (plain, False)
    second = upload(publisher, "models", "m.bin", io.BytesIO(b"v2"))
    assert second.version == first.version + 1
    assert load_bytes(reader, cache) == (b"v2", False)
    # Storing version 2 evicted version 1.
    assert [p.name.split("-")[0] for p in cache_files(cache)] == ["2"]


@pytest.mark.slow
def test_64_mib_byte_exact(publisher, reader, cache, tmp_path):
    src = tmp_path / "plain"
    digest = hashlib.sha256()
    with src.open("wb") as f:
        for i in range(64):
            block = data(MiB, seed=i)
            digest.update(block)
            f.write(block)
    with src.open("rb") as f:
        assert upload(publisher, "models", "big.bin", f).size == 64 * MiB
    for from_cache in (False, True):
        dst = tmp_path / f"out-{from_cache}"
        with dst.open("wb") as out:
            result = load(reader, cache, "models", "big.bin", out)
        assert (result.size, result.from_cache) == (64 * MiB, from_cache)
        got = hashlib.sha256()
        with dst.open("rb") as f:
            while block := f.read(4 * MiB):
                got.update(block)
        assert got.hexdigest() == digest.hexdigest()


def test_warm_cache_does_not_touch_the_cdn(publisher, reader, cache, upstream):
    plain = data(2 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    assert load_bytes(reader, cache) == (plain, False)
    assert cdn_gets(upstream, 1) == 1
    # The CDN could not serve it any more: only the cache can.
    for blob in upstream.blob_paths():
        blob.unlink()
    assert load_bytes(reader, cache) == (plain, True)
    assert cdn_gets(upstream, 1) == 1


def test_a_resource_over_max_size_is_refused_before_the_cdn(publisher, reader, cache, upstream):
    upload(publisher, "models", "m.bin", io.BytesIO(data(MiB + 1)))
    out = io.BytesIO()
    with pytest.raises(TooLarge, match=f"has {MiB + 1} bytes, over the inline cap of {MiB}"):
        load(reader, cache, "models", "m.bin", out, max_size=MiB)
    assert out.getvalue() == b""
    assert cdn_gets(upstream, 0) == 0
    assert load(reader, cache, "models", "m.bin", io.BytesIO(), max_size=MiB + 1).size == MiB + 1


@pytest.mark.parametrize("email_known", [True, False])
def test_wrong_password_or_email(upstream, email_known):
    client = ApiClient(upstream.url, timeout=10, retry=FAST_RETRY)
    email = upstream.reader.email if email_known else "nobody@example.com"
    with pytest.raises(Unauthorized, match="refused the email or password") as info:
        client.login(email, "not-the-password")
    assert "not-the-password" not in str(info.value)
    assert not client.authenticated
    with pytest.raises(Unauthorized, match="log in first"):
        client.get_resource("models", "m.bin")
    client.close()


def test_reader_may_not_publish(reader, upstream):
    with pytest.raises(Unauthorized, match="may not"):
        upload(reader, "models", "m.bin", io.BytesIO(b"x"))
    with pytest.raises(NotFound):
        reader.get_resource("models", "m.bin")


def test_unknown_resource(reader, cache):
    with pytest.raises(NotFound, match=r"models/nothing\.bin"):
        load(reader, cache, "models", "nothing.bin", io.BytesIO())
    assert cache_files(cache) == []


def test_upstream_down(publisher, reader, cache, upstream):
    upload(publisher, "models", "m.bin", io.BytesIO(data(MiB)))
    upstream.stop()
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        load(reader, cache, "models", "m.bin", io.BytesIO())
    assert cache_files(cache) == []
    upstream.start()
    assert load_bytes(reader, cache)[0] == data(MiB)


def test_upstream_down_mid_download_leaves_no_temp_file(
    publisher, reader, cache, upstream, monkeypatch
):
    plain = data(48 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    real_iter_big = reader.iter_big

    def iter_big(url: str, size: int, offset: int = 0) -> Iterator[bytes]:
        # The download runs on a thread of its own, faster than any reader:
        # stop the upstream from inside it, after its first chunk.
        for chunk in real_iter_big(url, size, offset):
            yield chunk
            if upstream.running:
                upstream.stop()

    monkeypatch.setattr(reader, "iter_big", iter_big)
    out = io.BytesIO()
    with pytest.raises(UpstreamUnavailable):
        load(reader, cache, "models", "m.bin", out)
    assert len(out.getvalue()) < len(plain)
    assert out.getvalue() == plain[: len(out.getvalue())]
    assert cache_files(cache) == []


def test_token_expiring_mid_session_logs_in_again(upstream_factory, cache):
    upstream = upstream_factory(token_ttl=1)
    plain = data(1000)
    publisher = client_for(upstream)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    # The publisher's logins: one, and another if a slow machine made its
    # upload outlive the one-second token. Counted from here on.
    base = logged(upstream, "POST /v1/login 200", 1)
    # Renewed before expiry by the client's clock: a login, then a renewal
    # (with the refresh token, not the password) ...
    reader = client_for(upstream, "reader")
    time.sleep(1.2)
    assert load_bytes(reader, cache)[0] == plain
    # ... or, with a clock that never moves, a login, then a renewal after the upstream's 401.
    frozen = client_for(upstream, "reader", clock=lambda: 0.0)
    time.sleep(1.2)
    assert load_bytes(frozen, cache) == (plain, True)
    assert logged(upstream, "POST /v1/token 200", 2) == 2
    assert logged(upstream, "POST /v1/login 200", base + 2) == base + 2
    for c in (publisher, reader, frozen):
        c.close()


def test_twenty_concurrent_loads(publisher, reader, cache, upstream):
    plain = data(3 * MiB + 7)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    results: list[bytes] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def work() -> None:
        try:
            barrier.wait()
            results.append(load_bytes(reader, cache)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 20
    assert all(r == plain for r in results)
    assert cdn_gets(upstream, 1) == 1  # one download; the others waited and read the cache
    assert len(cache_files(cache)) == 1


def test_tampered_big_part_on_the_cdn(publisher, reader, cache, upstream):
    plain = data(4 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    [blob] = upstream.blob_paths()
    flip_byte(blob, 2 * SEGMENT_SIZE + 10)
    out = io.BytesIO()
    with pytest.raises(CorruptData):
        load(reader, cache, "models", "m.bin", out)
    got = out.getvalue()
    assert len(got) <= 2 * SEGMENT_SIZE
    assert got == plain[: len(got)]  # a verified prefix, nothing else
    assert cache_files(cache) == []


def test_tampered_cache_file_after_output_started(publisher, reader, cache, upstream):
    plain = data(4 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    load_bytes(reader, cache)
    [entry] = cache_files(cache)
    flip_byte(entry, 2 * SEGMENT_SIZE + 10)
    out = io.BytesIO()
    with pytest.raises(CorruptData, match="cached big part"):
        load(reader, cache, "models", "m.bin", out)
    got = out.getvalue()
    assert 0 < len(got) <= 2 * SEGMENT_SIZE
    assert got == plain[: len(got)]
    assert cache_files(cache) == []  # evicted
    assert load_bytes(reader, cache) == (plain, False)


def test_tampered_cache_file_before_output_is_fetched_again(publisher, reader, cache, upstream):
    plain = data(4 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    load_bytes(reader, cache)
    [entry] = cache_files(cache)
    flip_byte(entry, 100)
    assert load_bytes(reader, cache) == (plain, False)
    assert cdn_gets(upstream, 2) == 2
    assert load_bytes(reader, cache) == (plain, True)


def test_truncated_cache_file_is_evicted(publisher, reader, cache, upstream):
    plain = data(2 * MiB)
    upload(publisher, "models", "m.bin", io.BytesIO(plain))
    load_bytes(reader, cache)
    [entry] = cache_files(cache)
    os.truncate(entry, 1000)
    assert load_bytes(reader, cache) == (plain, False)


def test_failed_upload_leaves_nothing_visible(publisher, reader, upstream):
    class Breaks(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            if self.sent >= 3 * MiB:
                raise OSError(5, "Input/output error")
            self.sent += MiB
            return bytes(MiB)

    with pytest.raises(BadRequest, match="cannot read the input"):
        upload(publisher, "models", "m.bin", Breaks())  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        reader.get_resource("models", "m.bin")


@pytest.mark.parametrize(
    ("folder", "name"),
    [("models", ".."), ("..", "m"), ("models", "a/b"), ("models", "a\x00b"), ("m", "\x1b[2J")],
)
def test_bad_names_refused_before_any_request(scripted: ScriptedServer, cache, folder, name):
    client = ApiClient(scripted.url, timeout=5)
    calls: list[Callable[[], object]] = [
        lambda: load(client, cache, folder, name, io.BytesIO()),
        lambda: upload(client, folder, name, io.BytesIO(b"x")),
    ]
    for call in calls:
        with pytest.raises(BadName):
            call()
    assert scripted.seen == []
    client.close()
