"""Tink's AES256_GCM_HKDF streaming AEAD wire format, on cryptography's AESGCM.

The layout (see ``docs/format.md``)::

    header   = 0x28 || salt (32) || nonce prefix (7)                  40 bytes
    key_seg  = HKDF-SHA256(ikm=key, salt=salt, info=associated data, 32 bytes)
    segment  = AES-256-GCM(key_seg, nonce, plaintext, no AD) = ciphertext || tag (16)
    nonce    = nonce prefix || segment number (4 bytes, big-endian) || last (1 byte)

A ciphertext is the header followed by segments of ``segment_size`` bytes, the
first one ``HEADER_SIZE`` shorter so that header and first segment fill one
segment; the last segment may be shorter and is the only one flagged last.
An empty plaintext is one empty, last segment. Any Tink implementation given
the key (as an ``AesGcmHkdfStreamingKey`` with HKDF-SHA256, 32-byte derived
keys and this segment size) and the associated data decrypts what this module
encrypts, and the other way round.

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
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cofferd.binary_split.pipeline import (
    Reader,
    chunk_reader,
    file_reader,
    mapped_reader,
    prefixed,
    segments,
    write_all,
)
from cofferd.errors import DecryptionError
from cofferd.names import check_name

KEY_SIZE = 32
SEGMENT_SIZE = 1 << 20
NONCE_PREFIX_SIZE = 7
HEADER_SIZE = 1 + KEY_SIZE + NONCE_PREFIX_SIZE
TAG_SIZE = 16
MIN_SEGMENT_SIZE = HEADER_SIZE + TAG_SIZE + 1
"""Tink's lower bound: the first segment must hold at least one plaintext byte."""
MAX_SEGMENT_SIZE = (1 << 31) - 1
"""Tink keeps the segment size in an int32."""

_MAX_SEGMENTS = 1 << 32  # the segment number is 4 bytes in the nonce
_LAST = struct.Struct(">IB")


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


def ciphertext_size(plaintext_size: int, *, segment_size: int = SEGMENT_SIZE) -> int:
    """The exact ciphertext size of a plaintext of ``plaintext_size`` bytes."""
    _check_segment_size(segment_size)
    if plaintext_size < 0:
        raise ValueError("plaintext_size must be >= 0")
    first = segment_size - HEADER_SIZE - TAG_SIZE
    rest = max(0, plaintext_size - first)
    count = 1 + -(-rest // (segment_size - TAG_SIZE))
    return HEADER_SIZE + plaintext_size + count * TAG_SIZE


def plaintext_size(ciphertext_size: int, *, segment_size: int = SEGMENT_SIZE) -> int:
    """The plaintext size a ciphertext of ``ciphertext_size`` bytes would decrypt to.

    ``ValueError`` if no ciphertext has that size (its last segment would be
    shorter than a tag). A size whose last segment is an empty one after a
    full one counts: no encryptor writes that, but Tink's readers accept it.
    """
    _check_segment_size(segment_size)
    body = ciphertext_size - HEADER_SIZE
    first = segment_size - HEADER_SIZE
    count = 1 + -(-max(0, body - first) // segment_size)
    last = body - (first + (count - 2) * segment_size if count > 1 else 0)
    if body < TAG_SIZE or last < TAG_SIZE:
        raise ValueError(f"no ciphertext is {ciphertext_size} bytes long")
    return body - count * TAG_SIZE


class _Segments:
    """The per-stream AES-GCM key and nonce prefix, and one segment's crypto."""

    __slots__ = ("_aead", "_prefix")

    def __init__(self, key: bytes, salt: bytes, nonce_prefix: bytes, associated_data: bytes):
        if not isinstance(associated_data, bytes):
            raise TypeError("associated_data must be bytes")
        hkdf = HKDF(hashes.SHA256(), KEY_SIZE, salt=salt, info=associated_data)
        self._aead = AESGCM(hkdf.derive(key))
        self._prefix = nonce_prefix

    def _nonce(self, index: int, last: bool) -> bytes:
        return self._prefix + _LAST.pack(index, last)

    def encrypt(self, index: int, last: bool, data: memoryview) -> bytes:
        if index >= _MAX_SEGMENTS:
            raise ValueError("plaintext too long for the segment counter")
        return self._aead.encrypt(self._nonce(index, last), data, None)

    def encrypt_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> None:
        if index >= _MAX_SEGMENTS:
            raise ValueError("plaintext too long for the segment counter")
        self._aead.encrypt_into(self._nonce(index, last), data, None, out)

    def decrypt(self, index: int, last: bool, data: memoryview) -> bytes:
        if index >= _MAX_SEGMENTS or len(data) < TAG_SIZE:
            raise DecryptionError
        try:
            return self._aead.decrypt(self._nonce(index, last), data, None)
        except InvalidTag:
            # from None: the error stays opaque, whichever check failed.
            raise DecryptionError from None

    def decrypt_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> None:
        # OpenSSL writes plaintext into ``out`` before it checks the tag: ``out``
        # is private to the pipeline, which hands it out only if this returns.
        if index >= _MAX_SEGMENTS or len(data) < TAG_SIZE:
            raise DecryptionError
        try:
            self._aead.decrypt_into(self._nonce(index, last), data, None, out)
        except InvalidTag:
            raise DecryptionError from None


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError("key must be bytes")
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes")


def _check_segment_size(segment_size: int) -> None:
    if not isinstance(segment_size, int):
        raise TypeError("segment_size must be an int")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")


def _parse_header(header: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    """Salt and nonce prefix; a short header or a lying length byte fails."""
    if len(header) != HEADER_SIZE or header[0] != HEADER_SIZE:
        raise DecryptionError
    return bytes(header[1 : 1 + KEY_SIZE]), bytes(header[1 + KEY_SIZE :])


def _new_header() -> tuple[bytes, bytes]:
    return os.urandom(KEY_SIZE), os.urandom(NONCE_PREFIX_SIZE)


class StreamEncryptor:
    """Incremental encryption: ``update`` as data comes, then ``finish`` once.

    ``finish()`` MUST be called: it writes the last segment, without which the
    ciphertext does not decrypt. Output starts with the header.
    """

    def __init__(self, key: bytes, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE):
        self._setup(key, associated_data, *_new_header(), segment_size)

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
        _check_key(key)
        _check_segment_size(segment_size)
        if len(salt) != KEY_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError("salt must be 32 bytes and nonce prefix 7 bytes")
        self._segments = _Segments(key, salt, prefix, ad)
        self._pending = bytes([HEADER_SIZE]) + salt + prefix  # handed out first
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
        _check_key(key)
        _check_segment_size(segment_size)
        if not isinstance(associated_data, bytes):
            raise TypeError("associated_data must be bytes")
        self._key = key
        self._ad = associated_data
        self._segments: _Segments | None = None
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
            salt, prefix = _parse_header(self._buffer[:HEADER_SIZE])
            self._segments = _Segments(self._key, salt, prefix, self._ad)
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


def _default_workers() -> int:
    """Two threads where two cores are ours: AESGCM releases the GIL."""
    return min(2, len(os.sched_getaffinity(0)))


def _pick_workers(workers: int | None) -> int:
    if workers is None:
        return _default_workers()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be an int >= 1")
    return workers


def _encrypt(
    read: Reader, key: bytes, associated_data: bytes, segment_size: int, workers: int | None
) -> Iterator[memoryview]:
    _check_key(key)
    _check_segment_size(segment_size)
    salt, prefix = _new_header()
    seg = _Segments(key, salt, prefix, associated_data)
    yield memoryview(bytes([HEADER_SIZE]) + salt + prefix)
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
    _check_key(key)
    _check_segment_size(segment_size)
    nworkers = _pick_workers(workers)
    header = read(memoryview(bytearray(HEADER_SIZE)))
    seg = _Segments(key, *_parse_header(header), associated_data)
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
