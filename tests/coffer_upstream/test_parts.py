"""The multipart extension and big parts on a real S3 server (``--store s3`` on Ceph radosgw):
begin offers parts, part URLs are the store's, the commit completes and verifies what the
store holds, devices download straight from the store."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from fixtures.s3 import S3_UPSTREAM_PART_SIZE, S3Server
from fixtures.upstream import Upstream

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)

PART = S3_UPSTREAM_PART_SIZE


def _begin(upstream: Upstream, folder: str = "models", name: str = "m.bin") -> dict[str, Any]:
    answer = requests.post(
        f"{upstream.url}/v1/resources/{folder}/{name}/uploads",
        json={},
        headers=upstream.auth(upstream.publisher),
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    begun: dict[str, Any] = answer.json()
    return begun


def _part_url(
    upstream: Upstream, upload_id: str, body: object, path: str = "models/m.bin"
) -> requests.Response:
    return requests.post(
        f"{upstream.url}/v1/resources/{path}/uploads/{upload_id}/parts",
        json=body,
        headers=upstream.auth(upstream.publisher),
        timeout=30,
    )


def _put_parts(upstream: Upstream, upload_id: str, data: bytes) -> int:
    count = max(1, -(-len(data) // PART))
    for number in range(1, count + 1):
        answer = _part_url(upstream, upload_id, {"part_number": number})
        assert answer.status_code == 200, answer.text
        part = data[(number - 1) * PART : number * PART]
        put = requests.put(answer.json()["url"], data=part, timeout=60)
        assert put.status_code == 200, put.text
    return count


def _commit(upstream: Upstream, upload_id: str, data: bytes) -> requests.Response:
    return requests.post(
        f"{upstream.url}/v1/resources/models/m.bin/uploads/{upload_id}/commit",
        json={
            "small": base64.b64encode(b"s" * 40).decode(),
            "key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "big_size": len(data),
            "big_sha256": hashlib.sha256(data).hexdigest(),
            "plaintext_size": len(data),
        },
        headers=upstream.auth(upstream.publisher),
        timeout=60,
    )


def _resource(upstream: Upstream) -> dict[str, Any]:
    answer = requests.get(
        f"{upstream.url}/v1/resources/models/m.bin",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_begin_offers_parts_and_urls_on_the_store(
    s3_upstream: Upstream, s3_server: S3Server
) -> None:
    begun = _begin(s3_upstream)
    assert begun["multipart"] == {"part_size": PART}
    store = urlsplit(s3_server.endpoint).netloc
    assert urlsplit(begun["big_url"]).netloc == store
    part = _part_url(s3_upstream, begun["upload_id"], {"part_number": 7})
    assert part.status_code == 200
    assert urlsplit(part.json()["url"]).netloc == store
    assert "partNumber=7" in part.json()["url"]


@pytest.mark.parametrize("size", [0, PART, 2 * PART + 12345])
def test_multipart_publish_then_download_straight_from_the_store(
    s3_upstream: Upstream, s3_server: S3Server, size: int
) -> None:
    data = os.urandom(size)
    begun = _begin(s3_upstream)
    _put_parts(s3_upstream, begun["upload_id"], data)
    committed = _commit(s3_upstream, begun["upload_id"], data)
    assert committed.status_code == 200, committed.text

    found = _resource(s3_upstream)
    assert (found["big_size"], found["big_sha256"]) == (size, hashlib.sha256(data).hexdigest())
    assert urlsplit(found["big_url"]).netloc == urlsplit(s3_server.endpoint).netloc
    assert requests.get(found["big_url"], timeout=60).content == data
    if size:
        tail = requests.get(found["big_url"], headers={"Range": "bytes=1-"}, timeout=60)
        assert (tail.status_code, tail.content) == (206, data[1:])


def test_a_single_put_with_a_length_still_works(
    s3_upstream: Upstream, s3_server: S3Server, s3_bucket: str
) -> None:
    """A publisher that ignores the offer PUTs the whole to big_url (with a Content-Length)."""
    data = os.urandom(300_000)
    begun = _begin(s3_upstream)
    assert requests.put(begun["big_url"], data=data, timeout=60).status_code == 200
    assert _commit(s3_upstream, begun["upload_id"], data).status_code == 200
    assert requests.get(_resource(s3_upstream)["big_url"], timeout=60).content == data
    # The multipart upload begun for it, never used, is not left behind.
    assert "Uploads" not in s3_server.client().list_multipart_uploads(Bucket=s3_bucket)


def test_commit_refuses_an_object_replaced_behind_the_upstreams_back(
    s3_upstream: Upstream, s3_server: S3Server, s3_bucket: str
) -> None:
    data = os.urandom(PART + 100)
    begun = _begin(s3_upstream)
    _put_parts(s3_upstream, begun["upload_id"], data)
    # Completed by someone with the store's keys, then the same size, other bytes.
    client = s3_server.client()
    (upload,) = client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
    key = upload["Key"]
    listed = client.list_parts(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"])
    parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed["Parts"]]
    client.complete_multipart_upload(
        Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    edited = bytearray(data)
    edited[-1] ^= 1
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(edited))

    refused = _commit(s3_upstream, begun["upload_id"], data)
    assert refused.status_code == 409
    assert "sha256" in refused.json()["detail"]
    missing = requests.get(
        f"{s3_upstream.url}/v1/resources/models/m.bin",
        headers=s3_upstream.auth(s3_upstream.reader),
        timeout=30,
    )
    assert missing.status_code == 404


def test_commit_without_parts_is_refused(s3_upstream: Upstream) -> None:
    begun = _begin(s3_upstream)
    refused = _commit(s3_upstream, begun["upload_id"], b"never sent")
    assert refused.status_code == 409


@pytest.mark.parametrize(
    "body",
    [{}, {"part_number": 0}, {"part_number": 10_001}, {"part_number": "1"}, {"part_number": True}],
)
def test_a_bad_part_number_is_400(s3_upstream: Upstream, body: object) -> None:
    begun = _begin(s3_upstream)
    answer = _part_url(s3_upstream, begun["upload_id"], body)
    assert answer.status_code == 400
    assert "part_number" in answer.json()["detail"]


def test_part_urls_of_unknown_foreign_or_committed_uploads(s3_upstream: Upstream) -> None:
    assert _part_url(s3_upstream, "0" * 32, {"part_number": 1}).status_code == 404
    begun = _begin(s3_upstream)
    other = _part_url(s3_upstream, begun["upload_id"], {"part_number": 1}, path="models/other")
    assert other.status_code == 404
    _put_parts(s3_upstream, begun["upload_id"], b"x")
    assert _commit(s3_upstream, begun["upload_id"], b"x").status_code == 200
    assert _part_url(s3_upstream, begun["upload_id"], {"part_number": 1}).status_code == 409


def test_part_urls_are_for_publishers(s3_upstream: Upstream) -> None:
    begun = _begin(s3_upstream)
    url = f"{s3_upstream.url}/v1/resources/models/m.bin/uploads/{begun['upload_id']}/parts"
    body = {"part_number": 1}
    assert requests.post(url, json=body, timeout=30).status_code == 401
    reader = s3_upstream.auth(s3_upstream.reader)
    assert requests.post(url, json=body, headers=reader, timeout=30).status_code == 403


def test_the_local_store_offers_no_parts(upstream: Upstream) -> None:
    begun = _begin(upstream)
    assert "multipart" not in begun
    assert _part_url(upstream, begun["upload_id"], {"part_number": 1}).status_code == 409


def test_an_expired_upload_aborts_its_multipart_upload(
    upstream_factory: Callable[..., Upstream], s3_server: S3Server, s3_bucket: str
) -> None:
    upstream = upstream_factory(upload_ttl=1, **s3_server.upstream_options(s3_bucket, PART))
    begun = _begin(upstream)
    url = _part_url(upstream, begun["upload_id"], {"part_number": 1}).json()["url"]
    assert requests.put(url, data=b"x" * 1000, timeout=30).status_code == 200
    client = s3_server.client()
    assert len(client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]) == 1
    deadline = time.monotonic() + 15
    while "Uploads" in client.list_multipart_uploads(Bucket=s3_bucket):
        assert time.monotonic() < deadline, "the expired upload's parts were never aborted"
        time.sleep(0.2)
    assert requests.put(url, data=b"late", timeout=30).status_code in (403, 404)
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
