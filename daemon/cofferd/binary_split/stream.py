"""Tink's AES256_GCM_HKDF streaming AEAD wire format, on cryptography's AESGCM.

The layout and the per-segment crypto live in
:mod:`cofferd.binary_split.segment` (and ``docs/format.md``); this module
streams whole ciphertexts over chunks, file objects and pipes. Any Tink
implementation given the key (as an ``AesGcmHkdfStreamingKey`` with
HKDF-SHA256, 32-byte derived keys and this segment size) and the associated
data decrypts what this module encrypts, and the other way round.

Contract: plaintext is handed out only after its segment's tag verified, in
order; any integrity failure (truncation, extension, reordering, a flipped bit,
a wrong key or associated data) raises one opaque
:class:`cofferd.errors.DecryptionError`, so everything handed out before it is
a prefix of the original. Memory stays at a few segments whatever the size.
Caller mistakes (a key of the wrong length, a bad segment size) are
``ValueError``/``TypeError``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from cofferd.binary_split.pipeline import (
    Reader,
    chunk_reader,
    file_reader,
    mapped_reader,
    prefixed,
    segments,
    write_all,
)
from cofferd.binary_split.segment import (
    HEADER_SIZE,
    KEY_SIZE,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    NONCE_PREFIX_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    SegmentCipher,
    check_key,
    check_segment_size,
    ciphertext_size,
    header_bytes,
    new_header,
    parse_header,
    plaintext_size,
)
from cofferd.errors import DecryptionError
from cofferd.names import check_name

__all__ = [
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "NONCE_PREFIX_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "StreamDecryptor",
    "StreamEncryptor",
    "archive_associated_data",
    "ciphertext_size",
    "decrypt_chunks",
    "decrypt_file",
    "default_workers",
    "encrypt_chunks",
    "encrypt_file",
    "new_key",
    "plaintext_size",
    "resource_associated_data",
]


def new_key() -> bytes:
    """A fresh random 32-byte key from the OS."""
    return os.urandom(KEY_SIZE)


def resource_associated_data(folder: str, name: str) -> bytes:
    """``coffer/v1/resource/<folder>/<name>``: binds a ciphertext to its resource.

    Both parts must follow the name rule (:class:`cofferd.errors.BadName`
    otherwise), so no two resources share associated data.
    """
    folder = check_name(folder, "folder")
    name = check_name(name, "resource name")
    return f"coffer/v1/resource/{folder}/{name}".encode()


def archive_associated_data(archive_id: str) -> bytes:
    """``coffer/v1/archive/<id>``: binds a ciphertext to its archive."""
    return f"coffer/v1/archive/{check_name(archive_id, 'archive id')}".encode()


class StreamEncryptor:
    """Incremental encryption: ``update`` as data comes, then ``finish`` once.

    ``finish()`` MUST be called: it writes the last segment, without which the
    ciphertext does not decrypt. Output starts with the header.
    """

    def __init__(self, key: bytes, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE):
        self._setup(key, associated_data, *new_header(), segment_size)

    @classmethod
    def _from_parts(
        cls,
        key: bytes,
        associated_data: bytes,
        salt: bytes,
        nonce_prefix: bytes,
        *,
        segment_size: int = SEGMENT_SIZE,
    ) -> StreamEncryptor:
        """Known-answer tests only: a fixed salt and nonce prefix."""
        self = cls.__new__(cls)
        self._setup(key, associated_data, salt, nonce_prefix, segment_size)
        return self

    def _setup(self, key: bytes, ad: bytes, salt: bytes, prefix: bytes, segment_size: int) -> None:
        check_key(key)
        check_segment_size(segment_size)
        if len(salt) != KEY_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError("salt must be 32 bytes and nonce prefix 7 bytes")
        self._segments = SegmentCipher(key, salt, prefix, ad)
        self._pending = header_bytes(salt, prefix)  # handed out first
        self._buffer = bytearray()
        self._capacity = segment_size - HEADER_SIZE - TAG_SIZE
        self._full = segment_size - TAG_SIZE
        self._index = 0
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Ciphertext of every segment known not to be the last, header first."""
        return b"".join(self._feed(data))

    def finish(self) -> bytes:
        """The rest of the ciphertext, ending with the last segment."""
        out = self._feed(b"")
        self._done = True
        with memoryview(self._buffer) as view:
            out.append(self._segments.encrypt(self._index, True, view))
        self._buffer.clear()
        return b"".join(out)

    def _feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._done:
            raise ValueError("the encryptor is finished")
        out = [self._pending] if self._pending else []
        self._pending = b""
        self._buffer += data
        # Strictly more than a segment: only then is this one known not last.
        while len(self._buffer) > self._capacity:
            with memoryview(self._buffer) as view, view[: self._capacity] as part:
                out.append(self._segments.encrypt(self._index, False, part))
            del self._buffer[: self._capacity]
            self._index += 1
            self._capacity = self._full
        return out


class StreamDecryptor:
    """Incremental decryption: ``update`` as ciphertext comes, then ``finish`` once.

    ``update`` returns only verified plaintext of segments known not to be the
    last. ``finish()`` MUST be called and must succeed before the plaintext
    counts as whole: it checks that the stream ends with its last segment
    (truncation at a segment boundary is found only there). After a
    :class:`DecryptionError` the decryptor refuses further use.
    """

    def __init__(self, key: bytes, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE):
        check_key(key)
        check_segment_size(segment_size)
        if not isinstance(associated_data, bytes):
            raise TypeError("associated_data must be bytes")
        self._key = key
        self._ad = associated_data
        self._segments: SegmentCipher | None = None
        self._buffer = bytearray()
        self._capacity = segment_size - HEADER_SIZE
        self._full = segment_size
        self._index = 0
        self._state = "open"  # -> "finished" | "failed"

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Verified plaintext of every complete segment known not to be the last."""
        return b"".join(self._guard(self._feed, data))

    def finish(self) -> bytes:
        """The last segment's verified plaintext; fails if the stream is cut short."""
        return b"".join(self._guard(self._finish))

    def _guard(self, step: Callable[..., list[bytes]], *args: object) -> list[bytes]:
        if self._state != "open":
            if self._state == "failed":
                raise DecryptionError
            raise ValueError("the decryptor is finished")
        try:
            return step(*args)
        except DecryptionError:
            self._state = "failed"
            self._buffer.clear()
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        if self._segments is None:
            if len(self._buffer) < HEADER_SIZE:
                return out
            salt, prefix = parse_header(self._buffer[:HEADER_SIZE])
            self._segments = SegmentCipher(self._key, salt, prefix, self._ad)
            del self._buffer[:HEADER_SIZE]
        while len(self._buffer) > self._capacity:
            # Released on the way out, even on failure: the buffer shrinks next.
            with memoryview(self._buffer) as view, view[: self._capacity] as part:
                out.append(self._segments.decrypt(self._index, False, part))
            del self._buffer[: self._capacity]
            self._index += 1
            self._capacity = self._full
        return out

    def _finish(self) -> list[bytes]:
        if self._segments is None:
            raise DecryptionError  # empty input or a short header
        with memoryview(self._buffer) as view:
            last = self._segments.decrypt(self._index, True, view)
        self._buffer.clear()
        self._state = "finished"
        return [last]


def default_workers() -> int:
    """Two threads where two cores are ours: AESGCM releases the GIL."""
    return min(2, len(os.sched_getaffinity(0)))


def _pick_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be an int >= 1")
    return workers


def _encrypt(
    read: Reader, key: bytes, associated_data: bytes, segment_size: int, workers: int | None
) -> Iterator[memoryview]:
    check_key(key)
    check_segment_size(segment_size)
    salt, prefix = new_header()
    seg = SegmentCipher(key, salt, prefix, associated_data)
    yield memoryview(header_bytes(salt, prefix))
    yield from segments(
        read,
        first_size=segment_size - HEADER_SIZE - TAG_SIZE,
        size=segment_size - TAG_SIZE,
        delta=TAG_SIZE,
        transform=seg.encrypt_into,
        workers=_pick_workers(workers),
    )


def _decrypt(
    read: Reader, key: bytes, associated_data: bytes, segment_size: int, workers: int | None
) -> Iterator[memoryview]:
    check_key(key)
    check_segment_size(segment_size)
    nworkers = _pick_workers(workers)
    header = read(memoryview(bytearray(HEADER_SIZE)))
    seg = SegmentCipher(key, *parse_header(header), associated_data)
    yield from segments(
        read,
        first_size=segment_size - HEADER_SIZE,
        size=segment_size,
        delta=-TAG_SIZE,
        transform=seg.decrypt_into,
        workers=nworkers,
    )


def encrypt_chunks(
    chunks: Iterable[bytes],
    key: bytes,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE,
    workers: int | None = None,
) -> Iterator[bytes]:
    """Ciphertext of the concatenated ``chunks``, header first, a segment at a time."""
    for view in _encrypt(chunk_reader(chunks), key, associated_data, segment_size, workers):
        yield bytes(view)


def decrypt_chunks(
    chunks: Iterable[bytes],
    key: bytes,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE,
    workers: int | None = None,
) -> Iterator[bytes]:
    """Verified plaintext of the concatenated ``chunks``, a segment at a time.

    Raises :class:`DecryptionError` at the first segment that fails; what was
    yielded before is a verified prefix. Every yielded ``bytes`` is the
    caller's to keep.
    """
    for view in _decrypt(chunk_reader(chunks), key, associated_data, segment_size, workers):
        if view:
            yield bytes(view)


def encrypt_file(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE,
    workers: int | None = None,
) -> int:
    """Encrypt ``src`` until EOF (files, pipes, sockets) into ``dst``.

    Returns the number of plaintext bytes read. OSError from either file
    propagates: the caller owns them.
    """
    written = count = 0
    for view in _encrypt(file_reader(src), key, associated_data, segment_size, workers):
        write_all(dst, view)
        written += len(view)
        count += 1
    return written - HEADER_SIZE - (count - 1) * TAG_SIZE  # count - 1 segments follow the header


def decrypt_file(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    associated_data: bytes,
    *,
    prefix: bytes = b"",
    map_src: bool = False,
    segment_size: int = SEGMENT_SIZE,
    workers: int | None = None,
) -> int:
    """Decrypt ``prefix`` then ``src`` until EOF into ``dst``; returns plaintext bytes written.

    ``prefix`` is ciphertext that comes before ``src``: the small part when
    ``src`` is the big part's file. Segments are decrypted into reused
    buffers (``decrypt_into``), on up to ``workers`` threads (default: two
    where two cores are ours), and written in order, each only after its tag
    verified. On :class:`DecryptionError` ``dst`` holds a verified prefix,
    which the caller discards. OSError from either file propagates.

    ``map_src=True`` reads a regular file through ``mmap`` instead of copying
    it (ignored for anything else), for files the process owns: if the file
    shrinks while being read, or a disk read fails, the process dies of
    SIGBUS rather than getting an error.
    """
    with contextlib.ExitStack() as stack:
        read: Reader | None = None
        if map_src:
            keep = (_pick_workers(workers) + 3) * segment_size
            read = stack.enter_context(mapped_reader(src, keep=keep))
        if read is None:
            read = file_reader(src)
        if prefix:
            read = prefixed(prefix, read)
        total = 0
        for view in _decrypt(read, key, associated_data, segment_size, workers):
            write_all(dst, view)
            total += len(view)
        return total
