"""A big part checked chunk by chunk against its signed segment manifest.

The manifest (docs/trust.md) is the concatenation of the raw SHA-256 digests
of the big part's chunks of ``segment_size`` bytes; its own SHA-256 is signed
by the publisher. A cold load fetches it once (:func:`check_manifest`), then
:func:`verified` holds each chunk until it is whole and its digest matches,
so no byte of a chunk reaches the cache file, a follower or the decryption
before the whole chunk is known to be the publisher's. A mismatch is
:class:`~cofferd.errors.Untrusted` (rule ``segment``); memory is two chunks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from cofferd.errors import Untrusted
from cofferd.resources.translate import raise_for_status
from cofferd.resources.upstream import ApiClient
from cofferd.trust.release import DIGEST_SIZE, segment_count

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
        return segment_count(self.big_size, self.segment_size)


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
    """The bytes of ``chunks`` (the big part from ``offset``), each chunk's once it is checked.

    ``offset`` is where ``chunks`` start in the big part: a chunk boundary.
    A whole chunk is hashed on a thread of its own while the next one
    arrives (hashlib lets go of the GIL), and its pieces are handed on as
    they came once its digest matched: no copy but of a piece that straddles
    two chunks. Memory: the chunk being checked and the one arriving.
    """
    size = signed.segment_size
    if offset % size:
        raise ValueError("a verified read starts at a chunk boundary")
    index = offset // size
    position = offset  # where the chunk being filled starts
    held: list[bytes] = []
    filled = 0
    checking: tuple[int, list[bytes], Future[bytes]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-digest") as hasher:
        try:
            for piece in chunks:
                view = memoryview(piece)
                while view:
                    want = min(size, signed.big_size - position)
                    if want <= 0:
                        raise Untrusted(
                            "the big part is longer than the signed one", rule="segment"
                        )
                    part = view[: want - filled]
                    held.append(piece if len(part) == len(piece) else bytes(part))
                    filled += len(part)
                    view = view[len(part) :]
                    if filled == want:
                        arrived = (index, held, hasher.submit(_digest, held))
                        if checking is not None:
                            yield from _checked(checking, manifest)
                        checking = arrived
                        held = []
                        index += 1
                        position += want
                        filled = 0
            if checking is not None:
                yield from _checked(checking, manifest)
                checking = None
        finally:
            if checking is not None:
                checking[2].cancel()
    if filled or position != signed.big_size:
        raise Untrusted("the big part's length differs from the signed one", rule="segment")


def _digest(pieces: list[bytes]) -> bytes:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.digest()


def _checked(chunk: tuple[int, list[bytes], Future[bytes]], manifest: bytes) -> list[bytes]:
    index, pieces, digest = chunk
    _check(digest.result(), manifest, index)
    return pieces


def _check(digest: bytes, manifest: bytes, index: int) -> None:
    expected = manifest[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
    if len(expected) != DIGEST_SIZE or not hmac.compare_digest(digest, expected):
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
