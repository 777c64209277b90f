"""Property tests in the manner of Tink's streaming test utility.

That utility truncates a ciphertext every few bytes, flips every bit after the
header and deletes or duplicates each segment, expecting each to fail. Here
the exhaustive sweeps run on one small ciphertext, and hypothesis explores
plaintexts, segment sizes, chunkings and damage at random. Small segments
(Tink's format allows any size from 57 bytes) keep every example fast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tink_oracle import TinkOracle

from cofferd.binary_split import stream
from cofferd.binary_split.stream import HEADER_SIZE, MIN_SEGMENT_SIZE
from cofferd.errors import DecryptionError

Rejected = Callable[[bytes, bytes, bytes, bytes, int], None]

KEY = bytes(range(100, 132))
AD = b"coffer/v1/archive/prop"
QUICK = settings(max_examples=300, deadline=None)


def encrypt(plain: bytes, seg: int) -> bytes:
    return b"".join(stream.encrypt_chunks([plain], KEY, AD, segment_size=seg, workers=1))


def segment_bounds(ct_len: int, seg: int) -> list[tuple[int, int]]:
    bounds, start = [], HEADER_SIZE
    end = seg
    while start < ct_len:
        bounds.append((start, min(end, ct_len)))
        start, end = end, end + seg
    return bounds


def decrypt_or_released(ct: bytes, seg: int) -> tuple[bool, bytes]:
    """(succeeded, plaintext released) through the chunk route."""
    out: list[bytes] = []
    try:
        out.extend(stream.decrypt_chunks([ct], KEY, AD, segment_size=seg, workers=1))
    except DecryptionError:
        return False, b"".join(out)
    return True, b"".join(out)


# One ciphertext of four segments, the last one short, swept exhaustively.
SEG = 64
PLAIN = os.urandom((SEG - 56) + 2 * (SEG - 16) + 21)
CT = encrypt(PLAIN, SEG)


def test_every_truncation_fails_and_releases_a_prefix() -> None:
    for length in range(len(CT)):
        ok, released = decrypt_or_released(CT[:length], SEG)
        assert not ok, length
        assert PLAIN.startswith(released), length


def test_every_bit_flip_fails_and_releases_a_prefix() -> None:
    for index in range(len(CT)):
        for bit in range(8):
            damaged = bytearray(CT)
            damaged[index] ^= 1 << bit
            ok, released = decrypt_or_released(bytes(damaged), SEG)
            assert not ok, (index, bit)
            assert PLAIN.startswith(released), (index, bit)


@pytest.mark.parametrize("how", ["delete", "duplicate"])
def test_deleting_or_duplicating_each_segment_fails(assert_rejected: Rejected, how: str) -> None:
    bounds = segment_bounds(len(CT), SEG)
    assert len(bounds) == 4
    for start, end in bounds:
        middle = b"" if how == "delete" else CT[start:end] * 2
        assert_rejected(CT[:start] + middle + CT[end:], KEY, AD, PLAIN, SEG)


segment_sizes = st.integers(min_value=MIN_SEGMENT_SIZE, max_value=160)
plaintexts = st.binary(max_size=700)


@functools.cache
def oracle(seg: int) -> TinkOracle:
    return TinkOracle(KEY, seg)


@QUICK
@given(
    plain=plaintexts,
    seg=segment_sizes,
    chunk=st.integers(min_value=1, max_value=300),
    workers=st.sampled_from([1, 2]),
)
def test_round_trip_in_any_chunking_and_tink_agrees(
    tink_oracle: object, plain: bytes, seg: int, chunk: int, workers: int
) -> None:
    pieces = [plain[i : i + chunk] for i in range(0, len(plain), chunk)]
    ct = b"".join(stream.encrypt_chunks(pieces, KEY, AD, segment_size=seg, workers=workers))
    assert len(ct) == stream.ciphertext_size(len(plain), segment_size=seg)
    ct_pieces = [ct[i : i + chunk] for i in range(0, len(ct), chunk)]
    got = stream.decrypt_chunks(ct_pieces, KEY, AD, segment_size=seg, workers=workers)
    assert b"".join(got) == plain
    assert oracle(seg).decrypt(ct, AD) == plain
    assert (
        b"".join(stream.decrypt_chunks([oracle(seg).encrypt(plain, AD)], KEY, AD, segment_size=seg))
        == plain
    )


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """(original plaintext, a damaged ciphertext of it, segment size)."""
    seg = draw(segment_sizes)
    plain = draw(plaintexts)
    ct = encrypt(plain, seg)
    bounds = segment_bounds(len(ct), seg)
    kind = draw(st.sampled_from(["truncate", "flip", "delete", "duplicate", "swap", "append"]))
    if kind == "truncate":
        out = ct[: draw(st.integers(0, len(ct) - 1))]
    elif kind == "flip":
        index, bit = draw(st.integers(0, len(ct) - 1)), draw(st.integers(0, 7))
        out = ct[:index] + bytes([ct[index] ^ (1 << bit)]) + ct[index + 1 :]
    elif kind == "append":
        out = ct + draw(st.binary(min_size=1, max_size=2 * seg))
    else:
        i = draw(st.integers(0, len(bounds) - 1))
        (s, e) = bounds[i]
        if kind == "delete":
            out = ct[:s] + ct[e:]
        elif kind == "duplicate":
            out = ct[:e] + ct[s:e] + ct[e:]
        else:
            others = [j for j in range(len(bounds)) if j != i] or [i]  # one segment: no-op
            j = draw(st.sampled_from(others))
            (a, b), (c, d) = sorted([bounds[i], bounds[j]])
            out = ct[:a] + ct[c:d] + ct[b:c] + ct[a:b] + ct[d:]
            if i == j:  # a lone segment has no partner: duplicate it instead
                out = ct + ct[s:e]
    return plain, out, seg


@QUICK
@given(case=damaged())
def test_any_damage_is_rejected_and_releases_a_prefix(
    assert_rejected: Rejected, case: tuple[bytes, bytes, int]
) -> None:
    plain, ct, seg = case
    assert_rejected(ct, KEY, AD, plain, seg)
