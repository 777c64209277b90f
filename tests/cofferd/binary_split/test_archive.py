"""The image archive container and the streaming manifest reader, without Docker."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable

import pytest
from tink_oracle import TinkOracle

from cofferd.binary_split import archive, stream
from cofferd.binary_split.archive import ArchiveHeader, ManifestImage, ManifestReader
from cofferd.errors import BadName, BadRequest, DecryptionError

KEY = bytes(range(32))
SEG = stream.SEGMENT_SIZE


def sealed(plaintext: bytes, archive_id: str = "images-1", key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    assert archive.seal(io.BytesIO(plaintext), out, archive_id, key) == len(plaintext)
    return out.getvalue()


def opened(data: bytes, key: bytes = KEY) -> bytes:
    src = io.BytesIO(data)
    header = archive.read_header(src)
    return b"".join(archive.decrypt(src, key, header))


def released(data: bytes, key: bytes = KEY) -> tuple[bytes, BaseException | None]:
    """What came out before decryption stopped, and why it stopped."""
    src = io.BytesIO(data)
    out = bytearray()
    try:
        header = archive.read_header(src)
        for piece in archive.decrypt(src, key, header):
            out += piece
    except DecryptionError as exc:
        return bytes(out), exc
    return bytes(out), None


# -- the container ------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, SEG - 57, SEG, 2 * SEG + 3])
def test_round_trip(size: int) -> None:
    plaintext = os.urandom(size)
    data = sealed(plaintext)
    assert data.startswith(b"COFFERAR\x01\x08images-1")
    assert opened(data) == plaintext


def test_the_header_layout_is_the_documented_one() -> None:
    header = ArchiveHeader("a.b-c_9")
    assert header.encode() == b"COFFERAR" + bytes([1, 7]) + b"a.b-c_9"
    assert header.size == 17
    assert archive.read_header(io.BytesIO(header.encode() + b"rest")) == header


def test_the_stream_is_plain_tink_with_the_archive_associated_data(
    tink_oracle: Callable[[bytes, int], TinkOracle],
) -> None:
    plaintext = os.urandom(SEG + 100)
    data = sealed(plaintext, "arch-7")
    body = data[ArchiveHeader("arch-7").size :]
    oracle = tink_oracle(KEY, SEG)
    assert oracle.decrypt(body, b"coffer/v1/archive/arch-7") == plaintext
    # ... and the other way round: Tink's stream behind our header opens here.
    theirs = oracle.encrypt(plaintext, b"coffer/v1/archive/arch-7")
    assert opened(ArchiveHeader("arch-7").encode() + theirs) == plaintext


def test_progress_counts_every_byte() -> None:
    plaintext = os.urandom(2 * SEG + 5)
    seen: list[int] = []
    archive.seal(io.BytesIO(plaintext), io.BytesIO(), "p", KEY, on_progress=seen.append)
    assert seen[-1] == len(plaintext)
    assert seen == sorted(seen)

    data = sealed(plaintext, "p")
    src = io.BytesIO(data)
    read: list[int] = []
    b"".join(archive.decrypt(src, KEY, archive.read_header(src), on_read=read.append))
    assert read[-1] == len(data)


def test_an_invalid_id_is_refused_when_sealing() -> None:
    with pytest.raises(BadName):
        sealed(b"x", "../etc")


def test_wrong_key_fails_and_releases_nothing() -> None:
    data = sealed(os.urandom(SEG * 2))
    out, exc = released(data, key=bytes(32))
    assert isinstance(exc, DecryptionError)
    assert out == b""


def test_another_id_in_the_header_fails_authentication() -> None:
    # Same length, still a valid name: only the associated data tells.
    data = sealed(os.urandom(1000), "images-1")
    swapped = data.replace(b"images-1", b"images-2", 1)
    assert archive.read_header(io.BytesIO(swapped)).archive_id == "images-2"
    with pytest.raises(DecryptionError):
        opened(swapped)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, ord("X"), "not a coffer image archive"),
        (7, ord("X"), "not a coffer image archive"),
        (8, 2, "unsupported archive format version 2"),
        (8, 0, "unsupported archive format version 0"),
        (9, 0, "archive id is invalid"),  # empty id
        (9, 200, "archive id is invalid"),  # longer than the name rule allows
        (10, ord("/"), "archive id is invalid"),
        (10, 0xC3, "archive id is invalid"),  # not ASCII
    ],
)
def test_a_tampered_header_is_refused(offset: int, value: int, message: str) -> None:
    data = bytearray(sealed(b"tar bytes"))
    data[offset] = value
    with pytest.raises(DecryptionError, match=message):
        opened(bytes(data))


@pytest.mark.parametrize("keep", [0, 5, 9, 12])
def test_a_truncated_header_is_refused(keep: int) -> None:
    with pytest.raises(DecryptionError, match="shorter than its header"):
        archive.read_header(io.BytesIO(sealed(b"x")[:keep]))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda n: n - 1, id="last-byte"),
        pytest.param(lambda n: n - SEG // 2, id="mid-last-segment"),
        pytest.param(lambda n: ArchiveHeader("images-1").size + SEG, id="segment-boundary"),
        pytest.param(lambda n: ArchiveHeader("images-1").size + 20, id="stream-header"),
    ],
)
def test_a_truncated_stream_fails_after_a_verified_prefix(cut: Callable[[int], int]) -> None:
    plaintext = os.urandom(3 * SEG)
    data = sealed(plaintext)
    out, exc = released(data[: cut(len(data))])
    assert isinstance(exc, DecryptionError)
    assert plaintext.startswith(out)
    assert len(out) < len(plaintext)


@pytest.mark.parametrize("where", ["first-segment", "middle", "last-segment"])
def test_a_flipped_byte_stops_at_its_segment(where: str) -> None:
    plaintext = os.urandom(3 * SEG)
    data = bytearray(sealed(plaintext))
    at = {"first-segment": 100, "middle": len(data) // 2, "last-segment": len(data) - 3}[where]
    data[at] ^= 0x01
    out, exc = released(bytes(data))
    assert isinstance(exc, DecryptionError)
    assert plaintext.startswith(out)
    assert len(out) < len(plaintext)


def test_extra_bytes_after_the_last_segment_fail() -> None:
    _, exc = released(sealed(os.urandom(100)) + b"\0")
    assert isinstance(exc, DecryptionError)


def test_inspect_reports_sizes_and_never_the_key() -> None:
    plaintext = os.urandom(2 * SEG + 10)
    data = sealed(plaintext, "arch-42")
    info = archive.inspect(io.BytesIO(data), len(data))
    assert info.archive_id == "arch-42"
    assert info.version == 1
    assert info.file_size == len(data)
    assert info.header_size == 17
    assert info.stream_size == len(data) - 17
    assert info.plaintext_size == len(plaintext)
    assert info.segments == 3
    assert stream.ciphertext_size(len(plaintext)) == info.stream_size
    assert KEY.hex() not in repr(info)


@pytest.mark.parametrize("stream_size", [0, stream.HEADER_SIZE + 15])
def test_inspect_refuses_an_impossible_stream_length(stream_size: int) -> None:
    data = sealed(b"")[: ArchiveHeader("images-1").size + stream_size]
    with pytest.raises(DecryptionError, match="truncated"):
        archive.inspect(io.BytesIO(data), len(data))


# -- the manifest reader --------------------------------------------------------

CONFIG = "ab" * 32


def make_tar(members: Iterable[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def manifest(*entries: dict[str, object]) -> bytes:
    return json.dumps(list(entries)).encode()


def read_in_pieces(data: bytes, size: int) -> ManifestReader:
    reader = ManifestReader()
    for i in range(0, len(data), size):
        reader.feed(data[i : i + size])
    return reader


@pytest.mark.parametrize("piece", [1, 511, 512, 513, 100_000])
def test_the_manifest_is_read_in_any_chunking(piece: int) -> None:
    data = make_tar(
        [
            (f"{CONFIG}.json", b"{}"),
            ("cd" * 32 + "/layer.tar", os.urandom(3000)),
            (
                "manifest.json",
                manifest(
                    {"Config": f"{CONFIG}.json", "RepoTags": ["a/b:1", "a/b:latest"]},
                    {"Config": f"blobs/sha256/{'ef' * 32}", "RepoTags": None},
                ),
            ),
            ("repositories", b"{}"),
        ]
    )
    reader = read_in_pieces(data, piece)
    assert reader.images() == [
        ManifestImage(f"sha256:{CONFIG}", ("a/b:1", "a/b:latest")),
        ManifestImage(f"sha256:{'ef' * 32}", ()),
    ]
    assert reader.candidate_ids == {f"sha256:{CONFIG}"}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_are_followed(fmt: int) -> None:
    long_dir = "d" * 150
    data = make_tar(
        [
            (f"{long_dir}/manifest.json", manifest({"Config": "decoy.json"})),
            (f"blobs/sha256/{CONFIG}", b"{}"),
            ("manifest.json", manifest({"Config": f"blobs/sha256/{CONFIG}", "RepoTags": ["x:1"]})),
        ],
        fmt,
    )
    reader = read_in_pieces(data, 700)
    assert reader.images() == [ManifestImage(f"sha256:{CONFIG}", ("x:1",))]
    assert reader.candidate_ids == {f"sha256:{CONFIG}"}


def test_no_manifest_is_an_error() -> None:
    reader = read_in_pieces(make_tar([("hello.txt", b"hi")]), 4096)
    with pytest.raises(BadRequest, match=r"no manifest\.json"):
        reader.images()


def test_a_damaged_member_header_is_an_error_not_a_crash() -> None:
    data = bytearray(make_tar([("a", b"1"), ("manifest.json", manifest({"Config": CONFIG}))]))
    data[1024 + 148] ^= 0xFF  # the second header's checksum
    reader = read_in_pieces(bytes(data), 100)
    with pytest.raises(BadRequest, match="damaged member header"):
        reader.images()


def test_an_oversized_manifest_is_refused() -> None:
    data = make_tar([("manifest.json", b" " * (archive.MAX_MANIFEST_BYTES + 1))])
    reader = read_in_pieces(data, 1 << 20)
    with pytest.raises(BadRequest, match="too large"):
        reader.images()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b"{}",
        b"[1]",
        b'[{"RepoTags": ["a:1"]}]',
        b'[{"Config": "../x.json"}]',
        b'[{"Config": "' + CONFIG.encode() + b'.json", "RepoTags": [1]}]',
    ],
)
def test_bad_manifests_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest, match=r"manifest\.json"):
        archive.parse_manifest(raw)
