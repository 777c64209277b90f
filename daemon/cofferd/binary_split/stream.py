"""Tink's AES256_GCM_HKDF streaming AEAD wire format, on cryptography's AESGCM.

The layout and the per-segment crypto live in
:mod:`cofferd.binary_split.segment` (and ``docs/format.md``); this module
streams whole ciphertexts over chunks, file objects and pipes: one encrypting
face, :func:`encrypt_chunks` (upload and archive seal feed it chunks), and one
decrypting pipeline with two faces, :func:`decrypt_file` (a load writes into its
sink, or nowhere for a verification pass) and :func:`decrypt_chunks` (unlock
hands the Docker SDK a body of chunks). Any Tink
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

import os
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Protocol

from coffer.streams import write_all
from cofferd.binary_split.pipeline import Reader, chunk_reader, file_reader, prefixed, segments
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
from cofferd.names import check_name

__all__ = [
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "NONCE_PREFIX_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "archive_associated_data",
    "ciphertext_size",
    "decrypt_chunks",
    "decrypt_file",
    "default_workers",
    "encrypt_chunks",
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
    read: Reader,
    key: bytes,
    associated_data: bytes,
    segment_size: int,
    workers: int | None,
    header: tuple[bytes, bytes] | None = None,
) -> Iterator[memoryview]:
    # ``header`` (salt, nonce prefix) is for known-answer tests only: reusing
    # one under the same key reuses nonces.
    check_key(key)
    check_segment_size(segment_size)
    salt, prefix = new_header() if header is None else header
    if len(salt) != KEY_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
        raise ValueError("salt must be 32 bytes and nonce prefix 7 bytes")
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
    read: Reader,
    key: bytes,
    associated_data: bytes,
    segment_size: int,
    workers: int | None,
    write_at: Callable[[memoryview, int], None] | None = None,
) -> Iterator[memoryview]:
    check_key(key)
    check_segment_size(segment_size)
    nworkers = _pick_workers(workers)
    header = read(memoryview(bytearray(HEADER_SIZE)))
    seg = SegmentCipher(key, *parse_header(header), associated_data)
    transform: Callable[[int, bool, memoryview, memoryview], None] = seg.decrypt_into
    if write_at is not None:
        first = segment_size - HEADER_SIZE - TAG_SIZE  # plaintext of segment 0
        full = segment_size - TAG_SIZE
        put = write_at

        def transform(index: int, last: bool, data: memoryview, out: memoryview) -> None:
            # On the worker that decrypted it, once its tag verified: the copies
            # out run in parallel too. Only whole, verified segments are written.
            seg.decrypt_into(index, last, data, out)
            put(out, 0 if index == 0 else first + (index - 1) * full)

    yield from segments(
        read,
        first_size=segment_size - HEADER_SIZE,
        size=segment_size,
        delta=-TAG_SIZE,
        transform=transform,
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


class Writer(Protocol):
    """Where :func:`decrypt_file` puts plaintext: a raw file's ``write`` (may take less)."""

    def write(self, data: memoryview, /) -> int | None: ...


class PositionalWriter(Protocol):
    """A sink that takes each verified segment at its offset, from any thread, in any order."""

    def write_at(self, data: memoryview, offset: int, /) -> None: ...


def decrypt_file(
    src: BinaryIO,
    dst: Writer | PositionalWriter | None,
    key: bytes,
    associated_data: bytes,
    *,
    prefix: bytes = b"",
    segment_size: int = SEGMENT_SIZE,
    workers: int | None = None,
) -> int:
    """Decrypt ``prefix`` then ``src`` until EOF into ``dst``; returns plaintext bytes.

    ``prefix`` is ciphertext that comes before ``src``: the small part when
    ``src`` is the big part's file. Segments are read into reused buffers
    (``readinto``), decrypted into reused buffers (``decrypt_into``) on up to
    ``workers`` threads (default: two where two cores are ours), and written
    to ``dst`` in order, each only after its tag verified: one copy in, the
    AES pass, one copy out. A :class:`PositionalWriter` (a memfd being
    filled) takes each segment at its offset on the worker that decrypted
    it, so the copies out run in parallel; on an error it may hold verified
    segments past a gap, and the caller discards it all (nothing of it was
    handed out). ``dst`` None is a verification pass whose plaintext goes
    nowhere. On :class:`DecryptionError` a :class:`Writer` holds a verified
    prefix, which the caller discards. OSError from either side propagates.
    """
    read = file_reader(src)
    if prefix:
        read = prefixed(prefix, read)
    write_at = getattr(dst, "write_at", None)
    if write_at is not None:
        total = 0
        for view in _decrypt(read, key, associated_data, segment_size, workers, write_at):
            total += len(view)
        return total
    total = 0
    for view in _decrypt(read, key, associated_data, segment_size, workers):
        if dst is not None:
            write_all(dst, view)  # type: ignore[arg-type]
        total += len(view)
    return total
