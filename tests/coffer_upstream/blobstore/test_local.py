"""The local store: whole-or-nothing writes, stat from the disk, signed URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from coffer_upstream.blobstore import Stored, new_blob_id
from coffer_upstream.blobstore.local import LocalStore
from coffer_upstream.signing import Signer


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path, Signer(bytes(32), clock=lambda: 1000.0), lambda: "http://h:1/")


async def _chunks(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ConnectionResetError("client gone")


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024 - 1, 1024 * 1024, 1024 * 1024 + 1, 3_000_001])
def test_receive_then_stat(store: LocalStore, size: int) -> None:
    data = os.urandom(size)
    blob_id = new_blob_id()
    pieces = [data[i : i + 65536] for i in range(0, size, 65536)]
    incoming = asyncio.run(store.receive(blob_id, _chunks(*pieces)))
    assert store.stat(blob_id) is None  # not the blob until installed
    store.install(incoming)
    stored = incoming.stored
    expected = Stored(size, hashlib.sha256(data).hexdigest())
    assert stored == expected
    assert store.stat(blob_id) == expected
    assert store.path(blob_id).read_bytes() == data
    assert list(store.temp_paths()) == []


def test_a_broken_body_leaves_nothing(store: LocalStore) -> None:
    blob_id = new_blob_id()
    with pytest.raises(ConnectionResetError):
        asyncio.run(store.receive(blob_id, _chunks(b"x" * 100, fail=True)))
    assert store.stat(blob_id) is None
    assert list(store.temp_paths()) == []


def test_stat_reads_what_is_on_disk_now(store: LocalStore) -> None:
    blob_id = new_blob_id()
    store.install(asyncio.run(store.receive(blob_id, _chunks(b"a" * 10))))
    path = store.path(blob_id)
    path.write_bytes(b"b" * 10)  # same size, tampered
    os.utime(path, ns=(1, 1))
    assert store.stat(blob_id) == Stored(10, hashlib.sha256(b"b" * 10).hexdigest())


def test_delete_is_idempotent(store: LocalStore) -> None:
    blob_id = new_blob_id()
    store.install(asyncio.run(store.receive(blob_id, _chunks(b"abc"))))
    store.delete(blob_id)
    store.delete(blob_id)
    assert store.stat(blob_id) is None


def test_urls_are_signed_for_one_method(store: LocalStore) -> None:
    blob_id = new_blob_id()
    signer = Signer(bytes(32), clock=lambda: 1000.0)
    for method, url in (("GET", store.get_url(blob_id, 60)), ("PUT", store.put_url(blob_id, 60))):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://h:1/cdn/{blob_id}"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert query["expires"] == "1060"
        signer.check_url(method, blob_id, query["expires"], query["sig"])
    assert store.part_size is None


def test_blob_ids_are_checked(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="not a blob id"):
        store.path("../secret")
