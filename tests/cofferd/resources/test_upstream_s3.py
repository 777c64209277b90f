"""The API client's big-part PUTs against a real S3 server (Ceph radosgw): a whole PUT
and a multipart upload through presigned URLs, as the store signs them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from coffer_upstream.blobstore import Stored, new_blob_id
from coffer_upstream.blobstore.s3 import MIN_PART_SIZE, S3Store
from cofferd.errors import UpstreamProtocolError
from cofferd.resources.upstream import ApiClient
from fixtures.s3 import S3Server


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


@pytest.fixture
def client() -> Iterator[ApiClient]:
    made = ApiClient("http://127.0.0.1:9")  # the resource API is not used here
    yield made
    made.close()


def _pieces(data: bytes, size: int = 65536) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_a_chunked_put_of_unknown_length_is_refused_by_s3(
    store: S3Store, client: ApiClient
) -> None:
    """Why a publisher needs multipart on S3: the whole-PUT streams a big part whose length
    is not known in advance, and S3 stores want a Content-Length (RGW: 411)."""
    blob_id = new_blob_id()
    with pytest.raises(UpstreamProtocolError, match="411"):
        client.put_big(store.put_url(blob_id, 60), _pieces(b"x" * 100_000))
    assert store.stat(blob_id) is None


@pytest.mark.parametrize("size", [0, 1, MIN_PART_SIZE, 2 * MIN_PART_SIZE + 12345])
def test_put_parts_to_s3(store: S3Store, client: ApiClient, size: int) -> None:
    data = os.urandom(size)
    blob_id = new_blob_id()
    upload = store.start_multipart(blob_id)
    count = client.put_parts(
        _pieces(data), MIN_PART_SIZE, lambda n: store.part_url(blob_id, upload, n, 60)
    )
    assert count == max(1, -(-size // MIN_PART_SIZE))
    store.finish_multipart(blob_id, upload)
    assert store.stat(blob_id) == Stored(size, hashlib.sha256(data).hexdigest())
