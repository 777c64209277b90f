"""The S3 store: big parts as objects in one bucket of any S3-compatible store, through boto3.

Devices download straight from the store (``get_url``: a presigned GET, Range
honoured by the store) and publishers upload straight to it (``put_url``, or a
multipart upload whose parts go to presigned ``upload_part`` URLs). The upstream
itself only signs URLs (no network), starts, completes and aborts multipart
uploads, and verifies what is stored.

How a big part is verified (``stat``): by reading the object back from the
store, streaming, and hashing it. The cheaper checks a store could enforce do
not fit: S3's ``x-amz-checksum-sha256`` is ignored by Ceph RGW and Swift (a
wrong one is stored as given), and what they do enforce, a signed
``x-amz-content-sha256`` or ``Content-MD5`` header, must be known when the URL is
signed, before the upload, while the protocol tells the digest only at commit.
An ETag is no digest either (an MD5 for a single PUT, collisions are made at
will; a digest of digests for multipart). Reading back costs one GET of the
part at commit, at the store's speed; it is what the device would check anyway.

Object keys are ``{prefix}{blob_id}``; blob ids are made by the upstream, so a
key never holds a client's text.

Errors: :class:`StoreUnavailable` when the store cannot be reached or fails
(its message names the operation and the store's error code, never a key or a
URL's signature), :class:`StoreFull` when it refuses for want of room.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from coffer_upstream.blobstore import Stored, StoreFull, StoreUnavailable, is_blob_id

log = logging.getLogger(__name__)

#: S3's smallest part (but the last) and most parts of one multipart upload.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
#: 64 MiB parts: up to 625 GiB in 10,000 parts, and a failed part costs little to send again.
DEFAULT_PART_SIZE = 64 * 1024 * 1024

#: What a read-back holds in memory at once.
_READ_CHUNK = 1024 * 1024

_ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_UPLOAD = frozenset({"NoSuchUpload"})
_FULL = frozenset({"QuotaExceeded", "InsufficientCapacity", "507"})


class S3Store:
    """A :class:`~coffer_upstream.blobstore.BlobStore` on an S3-compatible store.

    Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` in the environment, a profile, an instance role)
    unless given. The bucket must exist; the store never creates one.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"an S3 part is at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size: int | None = part_size
        config = Config(
            signature_version="s3v4",
            # Path-style: works on every S3-compatible store and with any bucket name.
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_connections,
            retries={"mode": "standard", "max_attempts": 3},
        )
        session = boto3.session.Session()
        if (access_key is None or secret_key is None) and session.get_credentials() is None:
            # Every URL is signed: without keys nothing works. Said at start, once.
            raise ValueError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or another source boto3 reads)"
            )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    # URLs (signed here, no request to the store)

    def get_url(self, blob_id: str, ttl: int) -> str:
        return self._presign("get_object", blob_id, ttl)

    def put_url(self, blob_id: str, ttl: int) -> str:
        return self._presign("put_object", blob_id, ttl)

    def part_url(self, blob_id: str, multipart_id: str, part_number: int, ttl: int) -> str:
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"a part number is from 1 to {MAX_PARTS}")
        return self._presign(
            "upload_part", blob_id, ttl, UploadId=multipart_id, PartNumber=part_number
        )

    def _presign(self, operation: str, blob_id: str, ttl: int, **params: Any) -> str:
        where = self._where(blob_id)
        with _errors("sign a URL"):
            url: str = self._client.generate_presigned_url(
                operation, Params={**where, **params}, ExpiresIn=ttl
            )
        return url

    # Multipart

    def start_multipart(self, blob_id: str) -> str:
        with _errors("start a multipart upload"):
            made = self._client.create_multipart_upload(**self._where(blob_id))
        upload_id: str = made["UploadId"]
        return upload_id

    def finish_multipart(self, blob_id: str, multipart_id: str) -> None:
        """Complete the upload from the parts the store holds, as the store lists them.

        A part list the store refuses (none, one too small, an upload already
        completed or aborted) completes nothing and is no error here: the
        commit's :meth:`stat` then finds the blob absent or not what was
        announced, and refuses it. No parts but the whole object there (a
        publisher that used the single PUT): the multipart upload is aborted,
        so that none is left behind.
        """
        where = self._where(blob_id)
        parts = []
        with _errors("list the uploaded parts"):
            pages = self._client.get_paginator("list_parts").paginate(
                **where, UploadId=multipart_id
            )
            try:
                for page in pages:
                    parts += [
                        {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
                        for part in page.get("Parts", [])
                    ]
            except ClientError as exc:
                # Completed or aborted before (a commit retried): RGW says NoSuchKey.
                if _code(exc) in _NO_UPLOAD | _ABSENT:
                    return
                raise
        if not parts:
            if self._exists(blob_id):
                self.abort_multipart(blob_id, multipart_id)
            return
        with _errors("complete a multipart upload"):
            try:
                self._client.complete_multipart_upload(
                    **where, UploadId=multipart_id, MultipartUpload={"Parts": parts}
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
                if status >= 500 or _code(exc) in _FULL:
                    raise
                log.info("multipart upload of %s not completed: %s", blob_id, _code(exc))

    def abort_multipart(self, blob_id: str, multipart_id: str) -> None:
        with _errors("abort a multipart upload"):
            try:
                self._client.abort_multipart_upload(**self._where(blob_id), UploadId=multipart_id)
            except ClientError as exc:
                if _code(exc) not in _NO_UPLOAD | _ABSENT:
                    raise

    # Contents

    def stat(self, blob_id: str) -> Stored | None:
        """Size and sha256 of the object as the store serves it now, read back whole."""
        sha = hashlib.sha256()
        size = 0
        with _errors("read a big part back"):
            try:
                got = self._client.get_object(**self._where(blob_id))
            except ClientError as exc:
                if _code(exc) in _ABSENT:
                    return None
                raise
            with contextlib.closing(got["Body"]) as body:
                for chunk in body.iter_chunks(_READ_CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
        return Stored(size, sha.hexdigest())

    def _exists(self, blob_id: str) -> bool:
        with _errors("look for a big part"):
            try:
                self._client.head_object(**self._where(blob_id))
            except ClientError as exc:
                if _code(exc) in _ABSENT:
                    return False
                raise
        return True

    def delete(self, blob_id: str) -> None:
        # S3's DELETE of an absent key succeeds: idempotent as it is.
        with _errors("delete a big part"):
            self._client.delete_object(**self._where(blob_id))

    def close(self) -> None:
        self._client.close()

    def _where(self, blob_id: str) -> dict[str, str]:
        if not is_blob_id(blob_id):
            raise ValueError("not a blob id")
        return {"Bucket": self.bucket, "Key": f"{self.prefix}{blob_id}"}


def _code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


@contextlib.contextmanager
def _errors(doing: str) -> Iterator[None]:
    """The store's failures as the blob store's errors, with nothing secret in them."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc) or "unknown"
        if code in _FULL:
            raise StoreFull(f"the S3 store has no room to {doing} ({code})") from exc
        raise StoreUnavailable(f"the S3 store failed to {doing} ({code})") from exc
    except BotoCoreError as exc:
        # Connection refused, timeouts, no credentials...: the class name says
        # which, without the endpoint's or a URL's text.
        raise StoreUnavailable(f"the S3 store failed to {doing} ({type(exc).__name__})") from exc
