"""The client library against a real cofferd and the reference upstream with its big parts
on a real S3 server (``--store s3`` on Ceph radosgw): cofferd publishes in parts, devices
download straight from the store, and a big part edited in the bucket is refused."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from coffer import client as cc
from fixtures.daemon import CofferdProcess
from fixtures.s3 import S3_UPSTREAM_PART_SIZE, S3Server
from fixtures.upstream import Upstream

Daemon = Callable[..., CofferdProcess]


@pytest.fixture
def daemon(cofferd: Daemon, s3_upstream: Upstream) -> CofferdProcess:
    return cofferd(upstream_url=s3_upstream.url)


@pytest.fixture
def c(daemon: CofferdProcess, s3_upstream: Upstream) -> Iterator[cc.Client]:
    with cc.Client(daemon.socket_path, timeout=120) as client:
        client.login(s3_upstream.publisher.email, s3_upstream.publisher.password)
        yield client


def _parts_asked(upstream: Upstream) -> int:
    return len(re.findall(r"POST /v1/resources/\S+/uploads/\S+/parts", upstream.log()))


@pytest.mark.parametrize("size", [0, 1000, 2 * S3_UPSTREAM_PART_SIZE + 4321])
def test_publish_in_parts_and_load_back_straight_from_the_store(
    c: cc.Client, daemon: CofferdProcess, s3_upstream: Upstream, s3_server: S3Server, size: int
) -> None:
    data = os.urandom(size)
    up = c.upload("model.bin", "models", io.BytesIO(data))
    assert up["size"] == size
    daemon.sign(up)
    # The ciphertext is a little longer than the plaintext: 3 parts for the largest.
    assert _parts_asked(s3_upstream) == (3 if size > S3_UPSTREAM_PART_SIZE else 1)

    found = requests.get(
        f"{s3_upstream.url}/v1/resources/models/model.bin",
        headers=s3_upstream.auth(s3_upstream.reader),
        timeout=30,
    ).json()
    assert urlsplit(found["big_url"]).netloc == urlsplit(s3_server.endpoint).netloc
    out = io.BytesIO()
    assert c.load("model.bin", "models", out)["size"] == size
    assert out.getvalue() == data


def test_a_big_part_edited_in_the_bucket_is_refused_on_load(
    c: cc.Client, daemon: CofferdProcess, s3_server: S3Server, s3_bucket: str
) -> None:
    daemon.sign(c.upload_bytes("t", "models", os.urandom(300_000)))
    store = s3_server.client()
    (key,) = [o["Key"] for o in store.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    raw = bytearray(store.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 1
    store.put_object(Bucket=s3_bucket, Key=key, Body=bytes(raw))
    # The signed segment digests catch it before decryption would (docs/trust.md).
    with pytest.raises(cc.Untrusted) as info:
        c.load("t", "models", io.BytesIO())
    assert (info.value.code, info.value.rule) == (422, "segment")
