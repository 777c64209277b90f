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
from cofferd.resources.cache import BackgroundWriter, BigPartCache
from cofferd.resources.memfd import MemfdSink
from cofferd.resources.upstream import ApiClient
from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

#: The field layer's decision for ``(folder, name)``: the info, and whether it
#: is an offline record (served from the cache only).
Resolver = Callable[[str, str], tuple[ResourceInfo, bool]]

#: Plaintext read from an upload's source per call.
READ_CHUNK = 1 << 20


def load(
    client: ApiClient,
    cache: BigPartCache,
    folder: str,
    name: str,
    out: BinaryIO | MemfdSink,
    *,
    max_size: int | None = None,
    resolve: Resolver | None = None,
) -> LoadResult:
    """Write the plaintext of ``folder/name``'s current version into ``out``.

    ``out`` is a file object, or a :class:`MemfdSink`, which is sized from the
    upstream's answer (its cap checked before any byte is fetched) and
    decrypted into in place; the caller seals it once this returns.

    With ``max_size``, a resource whose plaintext is larger is refused with
    :class:`TooLarge` before any byte is fetched from the CDN or the cache.

    A cached big part that fails authentication is evicted; if nothing was
    written yet it is fetched once more from the CDN, otherwise the load fails
    with :class:`CorruptData` and ``out`` holds a verified prefix, which the
    caller discards.

    ``resolve`` (the field layer's decision, ``cofferd.field.offline``) gives
    the resource's info and whether it comes from an offline record; an
    offline answer is served from the cache only, never from the CDN.
    """
    if resolve is None:
        info, offline = client.get_resource(folder, name), False
    else:
        info, offline = resolve(folder, name)
    if len(info.small) + info.big_size != ciphertext_size(info.plaintext_size):
        raise CorruptData(f"resource {folder}/{name}: sizes announced by the upstream disagree")
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
    refetched = False
    while True:
        path = cache.lookup(info)
        if path is None and offline:
            raise OfflineRefused(f"offline use of {folder}/{name} refused: it is not cached")
        if path is None:
            with cache.lock(info):
                # Another thread may have fetched it while this one waited.
                path = cache.lookup(info)
                if path is None:
                    _load_from_cdn(client, cache, info, sink)
                    return _result(info, sink, from_cache=False)
        try:
            with io.FileIO(path, "rb") as big:
                _decrypt(info, _CachedFile(big), sink)
        except FileNotFoundError:
            # Evicted by a newer version between lookup and open: look again.
            if sink.written:
                raise CorruptData("the cached big part vanished mid-read") from None
            continue
        except (DecryptionError, _SourceError) as exc:
            cache.evict(path)
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
            continue
        return _result(info, sink, from_cache=True)


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

    stored = client.put_big(ticket.big_url, big_body())
    if stored.size != big_size or stored.sha256 != digest.hexdigest():
        raise CorruptData("the CDN stored something other than the big part sent")
    committed = client.commit_upload(
        folder,
        name,
        ticket.upload_id,
        small=small,
        key=key,
        big_size=big_size,
        big_sha256=stored.sha256,
        plaintext_size=source.size,
    )
    log.info("uploaded %s/%s version %d (%d bytes)", folder, name, committed.version, source.size)
    return UploadResult(folder=folder, name=name, version=committed.version, size=source.size)


def _load_from_cdn(
    client: ApiClient, cache: BigPartCache, info: ResourceInfo, sink: _Output | _Mapped
) -> None:
    writer: BackgroundWriter | None
    try:
        writer = BackgroundWriter(cache.writer(info))
    except OSError as exc:
        # The cache is an optimisation: without room in it, stream straight through.
        log.warning("cannot cache %s/%s: %s", info.folder, info.name, exc.strerror)
        writer = None
    chunks = client.iter_big(info.big_url, info.big_size)
    try:
        # Plaintext may reach ``out`` before the sha256 is checked at the end:
        # each segment is authenticated under the key from the API, which the
        # CDN cannot forge. The sha256 keeps a bad big part out of the cache.
        _decrypt(info, _ChunkReader(chunks, writer), sink)
        if writer is not None:
            writer.commit()
    except DecryptionError as exc:
        raise CorruptData(
            f"resource {info.folder}/{info.name}: the upstream's data failed authentication"
        ) from exc
    finally:
        chunks.close()
        if writer is not None:
            writer.abort()


def _decrypt(info: ResourceInfo, big: _CachedFile | _ChunkReader, sink: _Output | _Mapped) -> None:
    # Not map_src: a disk error on a mapped cache file would kill the daemon (SIGBUS).
    ad = resource_associated_data(info.folder, info.name)
    src = cast(BinaryIO, big)
    if isinstance(sink, _Mapped):
        # Nothing of the mapping is handed out before load returns, so a
        # failure part-way leaves nothing verified "written": a retry may start over.
        sink.written = decrypt_file_into(src, sink.memfd.view, info.key, ad, prefix=info.small)
    else:
        decrypt_file(src, cast(BinaryIO, sink), info.key, ad, prefix=info.small)


def _result(info: ResourceInfo, sink: _Output | _Mapped, *, from_cache: bool) -> LoadResult:
    if sink.written != info.plaintext_size:
        raise CorruptData(f"resource {info.folder}/{info.name}: plaintext size differs")
    return LoadResult(
        folder=info.folder,
        name=info.name,
        version=info.version,
        size=sink.written,
        from_cache=from_cache,
    )


class _SourceError(Exception):
    """Reading the cached big part failed (an I/O error, not the caller's)."""


class _CachedFile:
    """The cached big part's file; its I/O errors mean "fetch it again", not "fail"."""

    def __init__(self, file: io.FileIO) -> None:
        self._file = file

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._file.readinto(buffer) or 0
        except OSError as exc:
            raise _SourceError(exc.strerror or "read failed") from exc


class _ChunkReader:
    """``readinto`` over the CDN's chunks, handing each to the cache on the way."""

    def __init__(self, chunks: Iterator[bytes], writer: BackgroundWriter | None) -> None:
        self._chunks = chunks
        self._writer = writer
        self._rest = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        if not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            if self._writer is not None:
                self._writer.write(chunk)
            self._rest = memoryview(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _Output(io.RawIOBase):
    """The caller's ``out``: counts what was written, translates its errors."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: memoryview) -> int:  # type: ignore[override]
        try:
            write_all(self._out, data)
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
