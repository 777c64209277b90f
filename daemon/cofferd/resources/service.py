"""Deliver and upload: the resource services the load owner and the RPC methods call.

:func:`deliver` is the read-and-deliver half of a load whose version the
field layer decided (``cofferd.field.loads``): the big part comes from the
managed cache (the cached file, the one download under way, or the CDN), is
joined to the small part and decrypted segment by segment into one
:class:`~cofferd.resources.sinks.Sink`. Only verified plaintext reaches the
sink; memory stays at a few segments whatever the size.

``upload`` reads plaintext until EOF, encrypts and splits it while reading,
streams the big part to the CDN and commits; until the commit nothing is
visible upstream, so any failure before it leaves nothing behind. As the
big part goes by it computes the release a publisher signs (docs/trust.md):
the big part's digest and segment manifest, the small part's digest and the
key's commitment, all from the bytes actually sent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import BinaryIO, cast

from cofferd.binary_split.split import DEFAULT_SMALL_SIZE, split
from cofferd.binary_split.stream import (
    ciphertext_size,
    decrypt_file,
    encrypt_chunks,
    new_key,
    resource_associated_data,
)
from cofferd.errors import BadRequest, CorruptData, DecryptionError, OfflineRefused
from cofferd.models import LoadResult, UploadResult
from cofferd.resources.managed import ManagedCache
from cofferd.resources.segments import SignedSegments
from cofferd.resources.sinks import Sink
from cofferd.resources.sources import Source, SourceError
from cofferd.resources.upstream import MAX_PART_SIZE, ApiClient
from cofferd.resources.wire import ResourceInfo
from cofferd.trust.release import ResourceRelease, SegmentDigests, key_commitment

log = logging.getLogger(__name__)

#: Plaintext read from an upload's source per call.
READ_CHUNK = 1 << 20


def deliver(
    cache: ManagedCache,
    info: ResourceInfo,
    sink: Sink,
    *,
    cached_only: bool = False,
    keep: bool = False,
    segments: SignedSegments | None = None,
) -> LoadResult:
    """Read ``info``'s big part and deliver the verified plaintext into ``sink``.

    The sizes the upstream announced are checked, and ``sink`` told the
    plaintext size (its cap, a memfd's size), before any byte is fetched.
    ``cached_only`` (an offline decision): served from the cache, never the
    CDN. ``keep`` (``pull``): the big part must end in the cache
    (:class:`~cofferd.errors.TooLarge` if there is no room for it).
    ``segments`` (a signed release, checked against ``info`` by the caller):
    a download is checked chunk by chunk before any byte of a chunk is read.

    A cached big part that fails authentication is evicted; if the sink can
    start over it is fetched once more, otherwise the load fails with
    :class:`CorruptData` and the sink holds a verified prefix, which the
    caller discards.
    """
    folder, name = info.folder, info.name
    if len(info.small) + info.big_size != ciphertext_size(info.plaintext_size):
        raise CorruptData(f"resource {folder}/{name}: sizes announced by the upstream disagree")
    sink.expect(f"{folder}/{name}", info.plaintext_size)
    refetched = False
    while True:
        try:
            with cache.reading(
                info, need_cache=keep, cached_only=cached_only, segments=segments
            ) as source:
                try:
                    _decrypt(info, source, sink)
                except DecryptionError as exc:
                    source.failed_authentication()
                    if not source.from_cache:
                        raise CorruptData(
                            f"resource {folder}/{name}: the upstream's data failed authentication"
                        ) from exc
                    raise _BadCachedFile() from exc
                if sink.written != info.plaintext_size:
                    raise CorruptData(f"resource {folder}/{name}: plaintext size differs")
                source.authenticated()
                from_cache = source.from_cache
        except FileNotFoundError:
            # Evicted between lookup and open: look again.
            if not sink.restart():
                raise CorruptData("the cached big part vanished mid-read") from None
            continue
        except (_BadCachedFile, SourceError) as exc:
            cache.drop_bad(info)
            restarted = sink.restart()
            if cached_only and restarted:
                raise OfflineRefused(
                    f"offline use of {folder}/{name} refused: its cached big part failed"
                    " authentication and the upstream is unreachable"
                ) from exc
            if not restarted or refetched:
                raise CorruptData(
                    f"resource {folder}/{name}: the cached big part failed authentication"
                ) from exc
            log.warning("cached big part of %s/%s failed; fetching it again", folder, name)
            refetched = True
            continue
        if keep and cache.big.lookup(info) is None:
            raise CorruptData(f"resource {folder}/{name}: the download did not land in the cache")
        return LoadResult(
            folder=folder,
            name=name,
            version=info.version,
            size=sink.written,
            from_cache=from_cache,
        )


def upload(
    client: ApiClient,
    folder: str,
    name: str,
    src: BinaryIO,
    small_size: int = DEFAULT_SMALL_SIZE,
) -> UploadResult:
    """Publish ``src``'s bytes until EOF as the next version of ``folder/name``."""
    ticket = client.begin_upload(folder, name)
    key = new_key()
    source = _Input(src)
    ciphertext = encrypt_chunks(source.chunks(), key, resource_associated_data(folder, name))
    small, big = split(ciphertext, small_size)
    digest = hashlib.sha256()
    segments = SegmentDigests()
    big_size = 0

    def big_body() -> Iterator[bytes]:
        nonlocal big_size
        for chunk in big:
            digest.update(chunk)
            segments.update(chunk)
            big_size += len(chunk)
            yield chunk

    if ticket.part_size is not None and ticket.part_size <= MAX_PART_SIZE:
        # Multipart (an extension the upstream offers): parts retried one by one.
        client.put_parts(
            big_body(),
            ticket.part_size,
            lambda number: client.part_url(folder, name, ticket.upload_id, number),
        )
    else:
        stored = client.put_big(ticket.big_url, big_body())
        if stored is not None and (stored.size != big_size or stored.sha256 != digest.hexdigest()):
            raise CorruptData("the CDN stored something other than the big part sent")
    manifest, manifest_sha256 = segments.finish()
    committed = client.commit_upload(
        folder,
        name,
        ticket.upload_id,
        small=small,
        key=key,
        big_size=big_size,
        big_sha256=digest.hexdigest(),
        plaintext_size=source.size,
        segment_size=segments.segment_size,
        segments=manifest,
    )
    log.info("uploaded %s/%s version %d (%d bytes)", folder, name, committed.version, source.size)
    release = ResourceRelease(
        folder=folder,
        name=name,
        version=committed.version,
        small_size=len(small),
        small_sha256=hashlib.sha256(small).hexdigest(),
        key_commitment=key_commitment(key, resource_associated_data(folder, name)),
        big_size=big_size,
        big_sha256=digest.hexdigest(),
        plaintext_size=source.size,
        segment_size=segments.segment_size,
        segments_sha256=manifest_sha256,
    )
    return UploadResult(
        folder=folder,
        name=name,
        version=committed.version,
        size=source.size,
        target={"path": release.path, **release.to_target()},
    )


def _decrypt(info: ResourceInfo, big: Source, sink: Sink) -> None:
    # Not a mapping of the cache file: a disk error there would kill the daemon (SIGBUS).
    ad = resource_associated_data(info.folder, info.name)
    decrypt_file(cast(BinaryIO, big), sink, info.key, ad, prefix=info.small)


class _BadCachedFile(Exception):
    """The cached big part failed authentication: evict it, fetch again if possible."""


class _Input:
    """The caller's ``src``, read until EOF, counted; its errors translated."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._src.read(READ_CHUNK)
            except OSError as exc:
                raise BadRequest(f"cannot read the input: {exc.strerror}") from exc
            if chunk is None:
                raise BadRequest("the input is non-blocking and not ready")
            if not chunk:
                return
            self.size += len(chunk)
            yield chunk
