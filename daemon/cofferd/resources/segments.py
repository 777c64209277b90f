"""A big part checked chunk by chunk against its signed segment manifest.

The manifest (docs/trust.md) is the concatenation of the raw SHA-256 digests
of the big part's chunks of ``segment_size`` bytes; its own SHA-256 is signed
by the publisher. A cold load fetches it once (:func:`check_manifest`), then
:func:`verified` holds each chunk until it is whole and its digest matches,
so no byte of a chunk reaches the cache file, a follower or the decryption
before the whole chunk is known to be the publisher's. A mismatch is
:class:`~cofferd.errors.Untrusted` (rule ``segment``); memory is one chunk.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cofferd.errors import Untrusted
from cofferd.resources.translate import raise_for_status
from cofferd.resources.upstream import ApiClient

#: Digest size in the manifest.
DIGEST_SIZE = 32
#: Largest signed segment size a device accepts: a chunk is held in memory whole.
MAX_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class SignedSegments:
    """What the publisher signed about a big part's chunks."""

    version: int
    big_size: int
    segment_size: int
    segments_sha256: str

    @property
    def count(self) -> int:
        return -(-self.big_size // self.segment_size)


def check_manifest(manifest: bytes, signed: SignedSegments) -> bytes:
    """``manifest`` if its length and SHA-256 are the signed ones (rule ``digest``)."""
    if len(manifest) != DIGEST_SIZE * signed.count or not hmac.compare_digest(
        hashlib.sha256(manifest).hexdigest(), signed.segments_sha256
    ):
        raise Untrusted("the segment manifest differs from the signed one", rule="digest")
    return manifest


def verified(
    chunks: Iterable[bytes], manifest: bytes, signed: SignedSegments, offset: int = 0
) -> Iterator[bytes]:
    """The bytes of ``chunks`` (the big part from ``offset``), one verified chunk at a time.

    ``offset`` is where ``chunks`` start in the big part: a chunk boundary.
    """
    size = signed.segment_size
    if offset % size:
        raise ValueError("a verified read starts at a chunk boundary")
    index = offset // size
    pending = bytearray()
    position = offset
    for piece in chunks:
        pending += piece
        while pending:
            want = min(size, signed.big_size - position)
            if len(pending) < want:
                break
            chunk = bytes(pending[:want])
            del pending[:want]
            _check(chunk, manifest, index)
            index += 1
            position += want
            yield chunk
            if position >= signed.big_size:
                break
    if pending or position != signed.big_size:
        raise Untrusted("the big part's length differs from the signed one", rule="segment")


def _check(chunk: bytes, manifest: bytes, index: int) -> None:
    expected = manifest[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
    if len(expected) != DIGEST_SIZE or not hmac.compare_digest(
        hashlib.sha256(chunk).digest(), expected
    ):
        raise Untrusted(
            f"chunk {index} of the big part differs from its signed digest", rule="segment"
        )


def fetch_manifest(client: ApiClient, folder: str, name: str, signed: SignedSegments) -> bytes:
    """The manifest of ``folder/name``'s signed version from the upstream, checked.

    Read up to one byte past its signed length, so an endless answer costs
    nothing; :class:`Untrusted` (``digest``) unless it is the signed manifest.
    """
    path = f"/v1/resources/{folder}/{name}/versions/{signed.version}/segments"
    limit = DIGEST_SIZE * signed.count + 1
    with client.exchange("GET", path, auth=True) as resp:
        if resp.status_code == 404:
            raise Untrusted(f"{folder}/{name}: the upstream has no segment manifest", rule="digest")
        raise_for_status(resp, f"segments of {folder}/{name}")
        body = bytearray()
        for piece in resp.iter_content(64 * 1024):
            body += piece
            if len(body) >= limit:
                break
    return check_manifest(bytes(body), signed)
