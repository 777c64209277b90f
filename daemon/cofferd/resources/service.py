"""Load and upload: the resource services the RPC methods wrap.

``load`` writes a resource's plaintext into a caller's file object: the small
part and key come from the API, the big part from the cache or the CDN, and
the two are joined and decrypted segment by segment. Only verified plaintext
reaches ``out``; memory stays at a few segments whatever the size.

``upload`` reads plaintext until EOF, encrypts and splits it while reading,
streams the big part to the CDN and commits; until the commit nothing is
visible upstream, so any failure before it leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from coffer.streams import write_all
from cofferd.binary_split.split import DEFAULT_SMALL_SIZE, split
from cofferd.binary_split.stream import (
    ciphertext_size,
    decrypt_file,
    decrypt_file_into,
    encrypt_chunks,
    new_key,
    resource_associated_data,
)
from cofferd.errors import (
    BadRequest,
    CorruptData,
    DecryptionError,
    OfflineRefused,
    PeerGone,
    TooLarge,
)
from cofferd.models import LoadResult, UploadResult
from cofferd.resources.managed import ManagedCache
from cofferd.resources.memfd import MemfdSink
from cofferd.resources.sources import Source, SourceError
from cofferd.resources.upstream import MAX_PART_SIZE, ApiClient
from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

#: The field layer's decision for ``(folder, name)``: the info, and whether it
#: is an offline record (served from the cache only).
Resolver = Callable[[str, str], tuple[ResourceInfo, bool]]

#: Plaintext read from an upload's source per call.
READ_CHUNK = 1 << 20


def resource_info(client: ApiClient, folder: str, name: str) -> ResourceInfo:
    """What the upstream says of ``folder/name``'s current version, its sizes checked.

    The one place ``load`` and ``pull`` learn a resource's key, small part and
    big part: a fallback for an unreachable upstream wraps this function.
    """
    info = client.get_resource(folder, name)
    _check_sizes(info)
    return info


def _check_sizes(info: ResourceInfo) -> None:
    if len(info.small) + info.big_size != ciphertext_size(info.plaintext_size):
        raise CorruptData(
            f"resource {info.folder}/{info.name}: sizes announced by the upstream disagree"
        )


def load(
    client: ApiClient,
    cache: ManagedCache,
    folder: str,
    name: str,
    out: BinaryIO | MemfdSink,
    *,
    max_size: int | None = None,
    info: ResourceInfo | None = None,
    resolve: Resolver | None = None,
) -> LoadResult:
    """Write the plaintext of ``folder/name``'s current version into ``out``.

    With ``max_size``, a resource whose plaintext is larger is refused with
    :class:`TooLarge` before any byte is fetched from the CDN or the cache.
    ``info``: what :func:`resource_info` gave, if the caller asked already.
    ``resolve`` (the field layer's decision, ``cofferd.field.offline``) gives
    the resource's info and whether it comes from an offline record; an
    offline answer is served from the cache only, never from the CDN.

    ``out`` is a file object, or a :class:`MemfdSink`, which is sized from the
    upstream's answer (its cap checked before any byte is fetched) and
    decrypted into in place; the caller seals it once this returns.

    The big part comes from the cache, or from the one download of it under
    way (started if need be), or, when the cache has no room, straight from
    the CDN. A cached big part that fails authentication is evicted; if
    nothing was written yet it is fetched once more, otherwise the load fails
    with :class:`CorruptData` and ``out`` holds a verified prefix, which the
    caller discards.
    """
    offline = False
    if info is None and resolve is not None:
        info, offline = resolve(folder, name)
        _check_sizes(info)
    elif info is None:
        info = resource_info(client, folder, name)
    if max_size is not None and info.plaintext_size > max_size:
        raise TooLarge(
            f"resource {folder}/{name} has {info.plaintext_size} bytes, over the cap of"
            f" {max_size}; pass an fd instead"
        )
    sink: _Output | _Mapped
    if isinstance(out, MemfdSink):
        out.reserve(info.plaintext_size)
        sink = _Mapped(out)
    else:
        sink = _Output(out)
    return _read(client, cache, info, sink, offline=offline)


def pull(
    client: ApiClient,
    cache: ManagedCache,
    folder: str,
    name: str,
    *,
    resolve: Resolver | None = None,
) -> LoadResult:
    """Fetch ``folder/name``'s current version into the cache, authenticating every byte.

    The plaintext goes nowhere: the pass exists to check every AES-GCM tag
    before the entry is kept. No room in the cache is :class:`TooLarge`.
    ``resolve`` as for :func:`load`: through it a pull also keeps the
    resource's offline record, so a device can be readied before its uplink
    goes; offline, a pull checks the cached copy again.
    """
    offline = False
    if resolve is not None:
        info, offline = resolve(folder, name)
        _check_sizes(info)
    else:
        info = resource_info(client, folder, name)
    result = _read(client, cache, info, _Output(_Nowhere()), need_cache=True, offline=offline)
    flight = cache.flight(info)
    if flight is not None:  # the pass is done; the rename follows at once
        flight.wait(PULL_LAND_WAIT)
    if cache.big.lookup(info) is None:
        raise CorruptData(f"resource {folder}/{name}: the download did not land in the cache")
    return result


#: Seconds ``pull`` waits for its download to land after its own pass ended.
PULL_LAND_WAIT = 30.0


def _read(
    client: ApiClient,
    cache: ManagedCache,
    info: ResourceInfo,
    sink: _Output | _Mapped,
    *,
    need_cache: bool = False,
    offline: bool = False,
) -> LoadResult:
    folder, name = info.folder, info.name
    refetched = False
    while True:
        try:
            with cache.reading(info, client, need_cache=need_cache, cached_only=offline) as source:
                try:
                    _decrypt(info, source, sink)
                    _check_size(info, sink)
                except DecryptionError as exc:
                    source.failed_authentication()
                    if not source.from_cache:
                        raise CorruptData(
                            f"resource {folder}/{name}: the upstream's data failed authentication"
                        ) from exc
                    raise _BadCachedFile() from exc
                source.authenticated()
                return _result(info, sink, from_cache=source.from_cache)
        except FileNotFoundError:
            # Evicted between lookup and open: look again.
            if sink.written:
                raise CorruptData("the cached big part vanished mid-read") from None
            continue
        except (_BadCachedFile, SourceError) as exc:
            cache.drop_bad(info)
            if offline and not sink.written:
                raise OfflineRefused(
                    f"offline use of {folder}/{name} refused: its cached big part failed"
                    " authentication and the upstream is unreachable"
                ) from exc
            if sink.written or refetched:
                raise CorruptData(
                    f"resource {folder}/{name}: the cached big part failed authentication"
                ) from exc
            log.warning("cached big part of %s/%s failed; fetching it again", folder, name)
            refetched = True


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
    big_size = 0

    def big_body() -> Iterator[bytes]:
        nonlocal big_size
        for chunk in big:
            digest.update(chunk)
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
    committed = client.commit_upload(
        folder,
        name,
        ticket.upload_id,
        small=small,
        key=key,
        big_size=big_size,
        big_sha256=digest.hexdigest(),
        plaintext_size=source.size,
    )
    log.info("uploaded %s/%s version %d (%d bytes)", folder, name, committed.version, source.size)
    return UploadResult(folder=folder, name=name, version=committed.version, size=source.size)


def _decrypt(info: ResourceInfo, big: Source, sink: _Output | _Mapped) -> None:
    # Not a mapping of the cache file: a disk error there would kill the daemon (SIGBUS).
    ad = resource_associated_data(info.folder, info.name)
    src = cast(BinaryIO, big)
    if isinstance(sink, _Mapped):
        # Nothing of the mapping is handed out before load returns, so a
        # failure part-way leaves nothing verified "written": a retry may start over.
        sink.written = decrypt_file_into(src, sink.memfd.view, info.key, ad, prefix=info.small)
    else:
        decrypt_file(src, cast(BinaryIO, sink), info.key, ad, prefix=info.small)


def _check_size(info: ResourceInfo, sink: _Output | _Mapped) -> None:
    if sink.written != info.plaintext_size:
        raise CorruptData(f"resource {info.folder}/{info.name}: plaintext size differs")


def _result(info: ResourceInfo, sink: _Output | _Mapped, *, from_cache: bool) -> LoadResult:
    return LoadResult(
        folder=info.folder,
        name=info.name,
        version=info.version,
        size=sink.written,
        from_cache=from_cache,
    )


class _BadCachedFile(Exception):
    """The cached big part failed authentication: evict it, fetch again if possible."""


class _Nowhere:
    """Where ``pull``'s plaintext goes: nowhere."""

    def write(self, data: memoryview) -> int:
        return len(data)


class _Output(io.RawIOBase):
    """The caller's ``out``: counts what was written, translates its errors."""

    def __init__(self, out: BinaryIO | _Nowhere) -> None:
        self._out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: memoryview) -> int:  # type: ignore[override]
        try:
            write_all(cast(BinaryIO, self._out), data)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise PeerGone("the reader of the output went away") from exc
            raise BadRequest(f"cannot write the output: {exc.strerror}") from exc
        self.written += len(data)
        return len(data)


class _Mapped:
    """A memfd's mapping as the output: filled in place, counted once complete."""

    def __init__(self, memfd: MemfdSink) -> None:
        self.memfd = memfd
        self.written = 0


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
