"""The S3 store against a real S3 server (Ceph radosgw): presigned URLs as devices and
publishers use them, multipart, refusals of expired and tampered URLs, stat from the store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from coffer_upstream.blobstore import Stored, StoreUnavailable, new_blob_id
from coffer_upstream.blobstore.s3 import MIN_PART_SIZE, S3Store
from fixtures.s3 import S3Server


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on, for the life of the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield sock.getsockname()[1]


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> Iterator[S3Store]:
    made = S3Store(
        s3_bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        part_size=MIN_PART_SIZE,
    )
    yield made
    made.close()


def _digest(data: bytes) -> Stored:
    return Stored(len(data), hashlib.sha256(data).hexdigest())


def _put(store: S3Store, blob_id: str, data: bytes) -> None:
    response = requests.put(store.put_url(blob_id, 60), data=data, timeout=30)
    assert response.status_code == 200, response.text


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024 + 1])
def test_presigned_put_then_stat_reads_the_object_back(store: S3Store, size: int) -> None:
    data = os.urandom(size)
    blob_id = new_blob_id()
    _put(store, blob_id, data)
    assert store.stat(blob_id) == _digest(data)


def test_presigned_get_whole_and_with_a_range(store: S3Store) -> None:
    data = os.urandom(300_000)
    blob_id = new_blob_id()
    _put(store, blob_id, data)
    url = store.get_url(blob_id, 60)
    assert url.startswith(store._client.meta.endpoint_url)
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200
    assert whole.content == data
    part = requests.get(url, headers={"Range": "bytes=1000-199999"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-199999/{len(data)}"
    assert part.content == data[1000:200000]
    tail = requests.get(url, headers={"Range": "bytes=299990-"}, timeout=30)
    assert tail.content == data[299990:]


def test_multipart_completes_from_the_stores_own_part_list(store: S3Store) -> None:
    assert store.part_size == MIN_PART_SIZE
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    blob_id = new_blob_id()
    upload = store.start_multipart(blob_id)
    # Parts sent out of order, one of them twice (the last PUT of a part wins).
    for number in (3, 1, 2, 1):
        start = (number - 1) * MIN_PART_SIZE
        chunk = data[start : start + MIN_PART_SIZE]
        response = requests.put(store.part_url(blob_id, upload, number, 60), data=chunk, timeout=60)
        assert response.status_code == 200, response.text
    assert store.stat(blob_id) is None  # nothing visible before completion
    store.finish_multipart(blob_id, upload)
    assert store.stat(blob_id) == _digest(data)
    # A commit retried after the completion: nothing more to do, nothing broken.
    store.finish_multipart(blob_id, upload)
    assert store.stat(blob_id) == _digest(data)


def test_a_multipart_upload_without_parts_or_with_a_small_part_completes_nothing(
    store: S3Store,
) -> None:
    empty_id = new_blob_id()
    store.finish_multipart(empty_id, store.start_multipart(empty_id))
    assert store.stat(empty_id) is None

    small_id = new_blob_id()
    upload = store.start_multipart(small_id)
    for number in (1, 2):
        url = store.part_url(small_id, upload, number, 60)
        assert requests.put(url, data=b"too small", timeout=30).status_code == 200
    store.finish_multipart(small_id, upload)  # the store refuses a first part under 5 MiB
    assert store.stat(small_id) is None
    store.abort_multipart(small_id, upload)


def test_abort_is_idempotent_and_ends_the_part_urls(store: S3Store) -> None:
    blob_id = new_blob_id()
    upload = store.start_multipart(blob_id)
    url = store.part_url(blob_id, upload, 1, 60)
    store.abort_multipart(blob_id, upload)
    store.abort_multipart(blob_id, upload)
    assert requests.put(url, data=b"late", timeout=30).status_code == 404
    store.finish_multipart(blob_id, upload)
    assert store.stat(blob_id) is None


def test_part_numbers_are_bounded(store: S3Store) -> None:
    blob_id = new_blob_id()
    for number in (0, 10_001):
        with pytest.raises(ValueError, match="part number"):
            store.part_url(blob_id, "upload", number, 60)


def test_an_expired_url_is_refused(store: S3Store) -> None:
    blob_id = new_blob_id()
    _put(store, blob_id, b"data")
    get = store.get_url(blob_id, 1)
    put = store.put_url(blob_id, 1)
    time.sleep(2.1)
    assert requests.get(get, timeout=30).status_code == 403
    assert requests.put(put, data=b"late", timeout=30).status_code == 403
    assert store.stat(blob_id) == _digest(b"data")


def test_a_tampered_url_is_refused(store: S3Store) -> None:
    """What an attacker holding one URL would try: another object, a longer life, another
    method, another part; each is refused and changes nothing."""
    secret_id, own_id = new_blob_id(), new_blob_id()
    _put(store, secret_id, b"secret")
    _put(store, own_id, b"mine")
    get = store.get_url(own_id, 60)
    assert requests.get(get, timeout=30).content == b"mine"

    other_object = get.replace(own_id, secret_id)
    assert requests.get(other_object, timeout=30).status_code == 403
    longer = _with_query(get, **{"X-Amz-Expires": "604800"})
    assert requests.get(longer, timeout=30).status_code == 403
    assert requests.put(get, data=b"overwritten", timeout=30).status_code == 403
    flipped = _with_query(get, **{"X-Amz-Signature": "0" * 64})
    assert requests.get(flipped, timeout=30).status_code == 403

    upload = store.start_multipart(own_id)
    part = store.part_url(own_id, upload, 1, 60)
    assert requests.put(_with_query(part, partNumber="2"), data=b"x", timeout=30).status_code == 403
    store.abort_multipart(own_id, upload)

    assert store.stat(secret_id) == _digest(b"secret")
    assert store.stat(own_id) == _digest(b"mine")


def test_stat_sees_an_object_replaced_behind_the_upstreams_back(
    store: S3Store, s3_server: S3Server, s3_bucket: str
) -> None:
    data = os.urandom(100_000)
    blob_id = new_blob_id()
    _put(store, blob_id, data)
    announced = _digest(data)
    assert store.stat(blob_id) == announced
    # Same size, one byte changed, written by someone with the store's keys.
    edited = bytearray(data)
    edited[50_000] ^= 1
    s3_server.client().put_object(Bucket=s3_bucket, Key=blob_id, Body=bytes(edited))
    found = store.stat(blob_id)
    assert found is not None
    assert found.size == announced.size
    assert found.sha256 != announced.sha256


def test_delete_is_idempotent(store: S3Store) -> None:
    blob_id = new_blob_id()
    _put(store, blob_id, b"data")
    url = store.get_url(blob_id, 60)
    store.delete(blob_id)
    assert store.stat(blob_id) is None
    assert requests.get(url, timeout=30).status_code == 404
    store.delete(blob_id)
    store.delete(new_blob_id())


def test_an_unreachable_store_is_unavailable_and_says_nothing_secret(
    s3_server: S3Server, s3_bucket: str
) -> None:
    with socket_closed_port() as port:
        dead = S3Store(
            s3_bucket,
            endpoint=f"http://127.0.0.1:{port}",
            region=s3_server.region,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            connect_timeout=1,
        )
        with pytest.raises(StoreUnavailable) as failed:
            dead.stat(new_blob_id())
    assert s3_server.secret_key not in str(failed.value)
    assert s3_server.access_key not in str(failed.value)
    assert "EndpointConnectionError" in str(failed.value)


def test_wrong_keys_are_unavailable_not_absent(s3_server: S3Server, s3_bucket: str) -> None:
    wrong = S3Store(
        s3_bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
    )
    with pytest.raises(StoreUnavailable, match="SignatureDoesNotMatch") as failed:
        wrong.stat(new_blob_id())
    assert "not-the-secret" not in str(failed.value)


def test_no_credentials_is_said_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ValueError, match="no S3 credentials"):
        S3Store("bucket", endpoint="http://127.0.0.1:9")


def test_bad_arguments(store: S3Store) -> None:
    with pytest.raises(ValueError, match="blob id"):
        store.get_url("../other-bucket/key", 60)
    with pytest.raises(ValueError, match="at least"):
        S3Store("bucket", part_size=MIN_PART_SIZE - 1)
