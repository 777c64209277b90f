"""Where big parts live: the :class:`BlobStore` interface and what ``stat`` answers.

Two implementations: ``local`` (a directory, served by the app's own ``/cdn``
routes behind HMAC-signed URLs; the default) and ``s3`` (any S3-compatible
store through boto3, presigned URLs on the store itself).

A blob id is 32 lowercase hex digits made by the upstream (never by a client),
so it is always one safe path component and one safe object key.

Errors: a store raises :class:`StoreUnavailable` when it cannot be reached or
fails (the app answers 503), :class:`StoreFull` when it is out of space (507).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Protocol

_BLOB_ID = re.compile(r"[0-9a-f]{32}")


def new_blob_id() -> str:
    return secrets.token_hex(16)


def is_blob_id(value: str) -> bool:
    return _BLOB_ID.fullmatch(value) is not None


class StoreError(Exception):
    """The base of the store's own errors; the message never holds a secret."""


class StoreUnavailable(StoreError):
    """The store failed or cannot be reached: retry later (503)."""


class StoreFull(StoreError):
    """The store has no room left (507)."""


@dataclass(frozen=True)
class Stored:
    size: int
    #: Lowercase hex sha256 of the bytes as stored now.
    sha256: str


class BlobStore(Protocol):
    """Where big parts live. blob_id: 32 lowercase hex digits made by the upstream."""

    #: None: no multipart (a single PUT of any size).
    part_size: int | None

    def get_url(self, blob_id: str, ttl: int) -> str:
        """An absolute presigned GET (HEAD too), Range honoured."""
        ...

    def put_url(self, blob_id: str, ttl: int) -> str:
        """An absolute presigned PUT of the whole blob."""
        ...

    def start_multipart(self, blob_id: str) -> str:
        """The store's multipart upload id."""
        ...

    def part_url(self, blob_id: str, multipart_id: str, part_number: int, ttl: int) -> str: ...

    def finish_multipart(self, blob_id: str, multipart_id: str) -> None:
        """Complete the upload from the store's own list of parts."""
        ...

    def abort_multipart(self, blob_id: str, multipart_id: str) -> None:
        """Idempotent."""
        ...

    def stat(self, blob_id: str) -> Stored | None:
        """Size and digest read from the store itself, never from what a client said.

        None: absent.
        """
        ...

    def delete(self, blob_id: str) -> None:
        """Idempotent."""
        ...

    def close(self) -> None: ...
