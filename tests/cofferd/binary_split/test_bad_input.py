"""Every kind of bad ciphertext raises the one DecryptionError, releasing only a prefix.

Each case runs through every decrypt route (chunks, file, both on one and two
threads, and a cached file with the small part as prefix): see
``conftest.assert_rejected``.
Most cases use a small segment size (Tink's format allows any), a few the
real 1 MiB segments.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from cofferd.binary_split import stream
from cofferd.binary_split.stream import HEADER_SIZE, SEGMENT_SIZE, TAG_SIZE

Rejected = Callable[[bytes, bytes, bytes, bytes, int], None]

SEG = 128
KEY = bytes(range(32))
AD = b"coffer/v1/resource/models/m.bin"
# Five segments: four full ones and a short last one.
PLAIN = os.urandom((SEG - HEADER_SIZE - TAG_SIZE) + 3 * (SEG - TAG_SIZE) + 50)


def encrypt(plain: bytes = PLAIN, seg: int = SEG, key: bytes = KEY, ad: bytes = AD) -> bytes:
    return b"".join(stream.encrypt_chunks([plain], key, ad, segment_size=seg))


def cut(ct: bytes, seg: int = SEG) -> tuple[bytes, list[bytes]]:
    """Header and segments of a ciphertext."""
    first = seg - HEADER_SIZE
    body = ct[HEADER_SIZE:]
    return ct[:HEADER_SIZE], [body[:first]] + [
        body[i : i + seg] for i in range(first, len(body), seg)
    ]


CT = encrypt()
HEADER, SEGMENTS = cut(CT)


def test_the_fixture_ciphertext_has_five_segments_and_decrypts() -> None:
    assert len(SEGMENTS) == 5
    assert len(SEGMENTS[-1]) == 50 + TAG_SIZE
    assert b"".join(stream.decrypt_chunks([CT], KEY, AD, segment_size=SEG)) == PLAIN


def test_empty_input(assert_rejected: Rejected) -> None:
    assert_rejected(b"", KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("size", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1])
def test_input_no_longer_than_a_header_and_less_than_a_tag(
    assert_rejected: Rejected, size: int
) -> None:
    assert_rejected(CT[:size], KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("boundary", [1, 2, 3, 4])
def test_truncation_at_a_segment_boundary(assert_rejected: Rejected, boundary: int) -> None:
    truncated = HEADER + b"".join(SEGMENTS[:boundary])
    assert_rejected(truncated, KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("where", [HEADER_SIZE + 1, SEG + 7, 2 * SEG + 100, len(CT) - 1])
def test_truncation_inside_a_segment(assert_rejected: Rejected, where: int) -> None:
    assert_rejected(CT[:where], KEY, AD, PLAIN, SEG)


def test_missing_last_segment(assert_rejected: Rejected) -> None:
    assert_rejected(HEADER + b"".join(SEGMENTS[:-1]), KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(TAG_SIZE), os.urandom(SEG)])
def test_bytes_appended_after_the_last_segment(assert_rejected: Rejected, extra: bytes) -> None:
    assert_rejected(CT + extra, KEY, AD, PLAIN, SEG)


def test_last_segment_appended_twice(assert_rejected: Rejected) -> None:
    assert_rejected(CT + SEGMENTS[-1], KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(TAG_SIZE), os.urandom(SEG)])
def test_bytes_appended_after_a_full_size_last_segment(
    assert_rejected: Rejected, extra: bytes
) -> None:
    # Tink 1.16 accepts these (tink-cc issue 20); the last flag must end the stream.
    plain = os.urandom((SEG - HEADER_SIZE - TAG_SIZE) + 2 * (SEG - TAG_SIZE))
    ct = encrypt(plain)
    assert len(cut(ct)[1][-1]) == SEG
    assert_rejected(ct + extra, KEY, AD, plain, SEG)


@pytest.mark.parametrize(("i", "j"), [(0, 1), (1, 2), (2, 3), (3, 4)])
def test_two_segments_swapped(assert_rejected: Rejected, i: int, j: int) -> None:
    segs = list(SEGMENTS)
    segs[i], segs[j] = segs[j], segs[i]
    assert_rejected(HEADER + b"".join(segs), KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("i", range(5))
def test_a_segment_duplicated(assert_rejected: Rejected, i: int) -> None:
    segs = SEGMENTS[: i + 1] + SEGMENTS[i:]
    assert_rejected(HEADER + b"".join(segs), KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("i", range(5))
def test_a_segment_deleted(assert_rejected: Rejected, i: int) -> None:
    segs = SEGMENTS[:i] + SEGMENTS[i + 1 :]
    assert_rejected(HEADER + b"".join(segs), KEY, AD, PLAIN, SEG)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


@pytest.mark.parametrize(
    "index",
    [0, 1, 20, HEADER_SIZE - 8, HEADER_SIZE - 1],
    ids=["length-byte", "salt-first", "salt-middle", "salt-last", "nonce-prefix-last"],
)
def test_a_bit_flipped_in_the_header(assert_rejected: Rejected, index: int) -> None:
    assert_rejected(flip(CT, index, bit=7), KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("segment", [0, 2, 4])
def test_a_bit_flipped_in_a_tag(assert_rejected: Rejected, segment: int) -> None:
    end = HEADER_SIZE + sum(len(s) for s in SEGMENTS[: segment + 1])
    assert_rejected(flip(CT, end - 1), KEY, AD, PLAIN, SEG)
    assert_rejected(flip(CT, end - TAG_SIZE, bit=3), KEY, AD, PLAIN, SEG)


@pytest.mark.parametrize("segment", [0, 2, 4])
def test_a_bit_flipped_in_a_body(assert_rejected: Rejected, segment: int) -> None:
    start = HEADER_SIZE + sum(len(s) for s in SEGMENTS[:segment])
    assert_rejected(flip(CT, start), KEY, AD, PLAIN, SEG)


def test_a_wrong_key(assert_rejected: Rejected) -> None:
    assert_rejected(CT, flip(KEY, 31), AD, PLAIN, SEG)
    assert_rejected(CT, stream.new_key(), AD, PLAIN, SEG)


def test_wrong_associated_data(assert_rejected: Rejected) -> None:
    assert_rejected(CT, KEY, AD + b"x", PLAIN, SEG)
    assert_rejected(CT, KEY, b"", PLAIN, SEG)
    assert_rejected(CT, KEY, stream.resource_associated_data("models", "other.bin"), PLAIN, SEG)


@pytest.mark.parametrize("length", [0x00, 0x18, 0x27, 0x29, 0x38, 0xFF])
def test_a_header_length_byte_that_lies(assert_rejected: Rejected, length: int) -> None:
    assert_rejected(bytes([length]) + CT[1:], KEY, AD, PLAIN, SEG)


def test_a_wrong_segment_size(assert_rejected: Rejected) -> None:
    assert_rejected(CT, KEY, AD, PLAIN, SEG + 1)
    assert_rejected(CT, KEY, AD, PLAIN, SEG - 1)


# With the real 1 MiB segments: the boundary cases that matter most.

FIRST = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE
FULL = SEGMENT_SIZE - TAG_SIZE


@pytest.fixture(scope="module")
def big() -> tuple[bytes, bytes]:
    """A plaintext whose last of three segments is full size, and its ciphertext."""
    plain = os.urandom(FIRST + 2 * FULL)
    ct = b"".join(stream.encrypt_chunks([plain], KEY, AD))
    assert len(ct) == 3 * SEGMENT_SIZE
    return plain, ct


def test_1mib_truncation_at_a_segment_boundary(
    assert_rejected: Rejected, big: tuple[bytes, bytes]
) -> None:
    plain, ct = big
    assert_rejected(ct[: 2 * SEGMENT_SIZE], KEY, AD, plain, SEGMENT_SIZE)


def test_1mib_bytes_after_a_full_size_last_segment(
    assert_rejected: Rejected, big: tuple[bytes, bytes]
) -> None:
    plain, ct = big
    assert_rejected(ct + b"\x00", KEY, AD, plain, SEGMENT_SIZE)
    assert_rejected(ct + ct[-SEGMENT_SIZE:], KEY, AD, plain, SEGMENT_SIZE)


def test_1mib_segments_swapped(assert_rejected: Rejected, big: tuple[bytes, bytes]) -> None:
    plain, ct = big
    swapped = ct[:SEGMENT_SIZE] + ct[2 * SEGMENT_SIZE :] + ct[SEGMENT_SIZE : 2 * SEGMENT_SIZE]
    assert_rejected(swapped, KEY, AD, plain, SEGMENT_SIZE)
