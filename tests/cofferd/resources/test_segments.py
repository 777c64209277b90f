"""A big part checked chunk by chunk: boundaries, a changed byte, a short or long stream."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from cofferd.errors import Untrusted
from cofferd.resources.segments import SignedSegments, check_manifest, verified
from cofferd.trust.release import SegmentDigests

SIZE = 16


def signed(big: bytes, size: int = SIZE) -> tuple[bytes, SignedSegments]:
    digests = SegmentDigests(size)
    digests.update(big)
    manifest, sha = digests.finish()
    return manifest, SignedSegments(1, len(big), size, sha)


def pieces(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)] or [b""]


@pytest.mark.parametrize("length", [0, 1, SIZE - 1, SIZE, SIZE + 1, 5 * SIZE + 3])
@pytest.mark.parametrize("piece", [1, 7, SIZE, 100])
def test_every_chunk_comes_out_whole_and_checked(length: int, piece: int) -> None:
    big = bytes(range(256)) * 2
    big = big[:length]
    manifest, s = signed(big)
    seen = 0  # how much the stream had given when each piece came out
    given = 0

    def stream() -> Iterator[bytes]:
        nonlocal given
        for p in pieces(big, piece):
            given += len(p)
            yield p

    out = b""
    for part in verified(stream(), check_manifest(manifest, s), s):
        out += part
        # Nothing of a chunk comes out before the stream gave the whole chunk.
        chunk_end = min(len(big), -(-len(out) // SIZE) * SIZE)
        assert given >= chunk_end
        seen = len(out)
    assert out == big
    assert seen == len(big)


def test_a_changed_byte_stops_before_its_chunk() -> None:
    big = bytes(5 * SIZE)
    manifest, s = signed(big)
    bad = bytearray(big)
    bad[2 * SIZE + 3] = 1
    out: list[bytes] = []
    with pytest.raises(Untrusted) as info:
        out.extend(verified(pieces(bytes(bad), 5), manifest, s))
    assert info.value.rule == "segment"
    assert b"".join(out) == big[: 2 * SIZE]  # the chunks before it only


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_stream_shorter_or_longer_than_signed_is_refused(delta: int) -> None:
    big = bytes(3 * SIZE)
    manifest, s = signed(big)
    served = big[:delta] if delta < 0 else big + b"x"
    with pytest.raises(Untrusted):
        list(verified([served], manifest, s))


def test_a_read_from_a_chunk_boundary_checks_from_there() -> None:
    big = bytes(range(64))
    manifest, s = signed(big)
    assert b"".join(verified([big[2 * SIZE :]], manifest, s, offset=2 * SIZE)) == big[2 * SIZE :]
    with pytest.raises(ValueError, match="chunk boundary"):
        list(verified([big[3:]], manifest, s, offset=3))


def test_a_manifest_not_signed_is_a_digest_refusal() -> None:
    manifest, s = signed(bytes(3 * SIZE))
    for other in (manifest[:-1], manifest + bytes(32), bytes(len(manifest))):
        with pytest.raises(Untrusted) as info:
            check_manifest(other, s)
        assert info.value.rule == "digest"
    assert hashlib.sha256(check_manifest(manifest, s)).hexdigest() == s.segments_sha256
