"""The arithmetic of Tink's AES256_GCM_HKDF streaming AEAD format: one segment at a time.

The layout (see ``docs/format.md``)::

    header   = 0x28 || salt (32) || nonce prefix (7)                  40 bytes
    key_seg  = HKDF-SHA256(ikm=key, salt=salt, info=associated data, 32 bytes)
    segment  = AES-256-GCM(key_seg, nonce, plaintext, no AD) = ciphertext || tag (16)
    nonce    = nonce prefix || segment number (4 bytes, big-endian) || last (1 byte)

A ciphertext is the header followed by segments of ``segment_size`` bytes, the
first one ``HEADER_SIZE`` shorter so that header and first segment fill one
segment; the last segment may be shorter and is the only one flagged last.
An empty plaintext is one empty, last segment. :mod:`cofferd.binary_split.stream`
builds whole streams from these parts.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cofferd.errors import DecryptionError

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


def ciphertext_size(plaintext_size: int, *, segment_size: int = SEGMENT_SIZE) -> int:
    """The exact ciphertext size of a plaintext of ``plaintext_size`` bytes."""
    check_segment_size(segment_size)
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
    check_segment_size(segment_size)
    body = ciphertext_size - HEADER_SIZE
    first = segment_size - HEADER_SIZE
    count = 1 + -(-max(0, body - first) // segment_size)
    last = body - (first + (count - 2) * segment_size if count > 1 else 0)
    if body < TAG_SIZE or last < TAG_SIZE:
        raise ValueError(f"no ciphertext is {ciphertext_size} bytes long")
    return body - count * TAG_SIZE


class SegmentCipher:
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

    def encrypt_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> None:
        if index >= _MAX_SEGMENTS:
            raise ValueError("plaintext too long for the segment counter")
        self._aead.encrypt_into(self._nonce(index, last), data, None, out)

    def decrypt_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> None:
        # OpenSSL writes plaintext into ``out`` before it checks the tag: ``out``
        # is private to the pipeline, which hands it out only if this returns.
        if index >= _MAX_SEGMENTS or len(data) < TAG_SIZE:
            raise DecryptionError
        try:
            self._aead.decrypt_into(self._nonce(index, last), data, None, out)
        except InvalidTag:
            # from None: the error stays opaque, whichever check failed.
            raise DecryptionError from None


def check_key(key: bytes) -> None:
    """A caller mistake unless ``key`` is 32 bytes."""
    if not isinstance(key, bytes):
        raise TypeError("key must be bytes")
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes")


def check_segment_size(segment_size: int) -> None:
    """A caller mistake unless Tink allows this segment size."""
    if not isinstance(segment_size, int):
        raise TypeError("segment_size must be an int")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")


def parse_header(header: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    """Salt and nonce prefix; a short header or a lying length byte fails."""
    if len(header) != HEADER_SIZE or header[0] != HEADER_SIZE:
        raise DecryptionError
    return bytes(header[1 : 1 + KEY_SIZE]), bytes(header[1 + KEY_SIZE :])


def new_header() -> tuple[bytes, bytes]:
    """A fresh salt and nonce prefix from the OS."""
    return os.urandom(KEY_SIZE), os.urandom(NONCE_PREFIX_SIZE)


def header_bytes(salt: bytes, nonce_prefix: bytes) -> bytes:
    """The 40-byte header that carries ``salt`` and ``nonce_prefix``."""
    return bytes([HEADER_SIZE]) + salt + nonce_prefix
