"""The signed target of a release: its manifest, its commitment, its strict parsing."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from tuf.api.metadata import TargetFile

from cofferd.trust.release import (
    SEGMENT_SIZE,
    ArchiveRelease,
    ReleaseFormatError,
    ResourceRelease,
    SegmentDigests,
    key_commitment,
    parse_target,
    segment_count,
)

SMALL = 97  # a segment size that makes the boundaries cheap to cover


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 3 * SMALL + 5])
@pytest.mark.parametrize("piece", [1, 7, SMALL, 1000])
def test_the_manifest_is_the_chunks_digests_whatever_the_pieces(size: int, piece: int) -> None:
    data = bytes(i % 251 for i in range(size))
    digests = SegmentDigests(SMALL)
    for at in range(0, size, piece):
        digests.update(data[at : at + piece])
    manifest, manifest_sha256 = digests.finish()
    expected = b"".join(
        hashlib.sha256(data[at : at + SMALL]).digest() for at in range(0, size, SMALL)
    )
    assert manifest == expected
    assert len(manifest) == 32 * segment_count(size, SMALL)
    assert manifest_sha256 == hashlib.sha256(expected).hexdigest()


def test_a_manifest_is_finished_once() -> None:
    digests = SegmentDigests()
    digests.finish()
    with pytest.raises(RuntimeError):
        digests.finish()
    with pytest.raises(RuntimeError):
        digests.update(b"x")


def test_the_key_commitment_binds_key_and_name() -> None:
    key = bytes(range(32))
    ad = b"coffer/v1/resource/models/a"
    assert (
        key_commitment(key, ad)
        == hmac.new(key, b"coffer/v1/key-commitment\x00" + ad, hashlib.sha256).hexdigest()
    )
    assert key_commitment(key, ad) != key_commitment(key, b"coffer/v1/resource/models/b")
    assert key_commitment(key, ad) != key_commitment(bytes(32), ad)


def _resource() -> ResourceRelease:
    return ResourceRelease(
        folder="models",
        name="yolo.onnx",
        version=3,
        small_size=4096,
        small_sha256="a" * 64,
        key_commitment="b" * 64,
        big_size=5 * SEGMENT_SIZE,
        big_sha256="c" * 64,
        plaintext_size=5 * SEGMENT_SIZE,
        segment_size=SEGMENT_SIZE,
        segments_sha256="d" * 64,
    )


def test_a_resource_release_survives_tuf_json() -> None:
    release = _resource()
    target = TargetFile.from_dict(release.to_target(), release.path)
    assert target.length == 4096
    assert parse_target(target) == release


def test_an_archive_release_survives_tuf_json() -> None:
    release = ArchiveRelease(
        archive_id="images", length=10, sha256="e" * 64, key_commitment="f" * 64
    )
    assert release.path == "archives/images"
    assert parse_target(TargetFile.from_dict(release.to_target(), release.path)) == release


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 0),
        ("version", True),
        ("version", "3"),
        ("big_size", -1),
        ("big_sha256", "C" * 64),
        ("segments_sha256", "d" * 63),
        ("segment_size", 0),
        ("kind", "archive"),
        ("key_commitment", None),
    ],
)
def test_a_malformed_field_is_refused_by_name(field: str, value: object) -> None:
    release = _resource()
    raw = release.to_target()
    raw["custom"]["coffer"][field] = value
    with pytest.raises(ReleaseFormatError, match=field if field != "kind" else "kind"):
        parse_target(TargetFile.from_dict(raw, release.path))


@pytest.mark.parametrize(
    "path", ["models/yolo.onnx", "resources/models", "resources/a/b/c", "archives/a/b", "archives/"]
)
def test_a_path_of_no_known_shape_is_refused(path: str) -> None:
    with pytest.raises(ReleaseFormatError):
        parse_target(TargetFile.from_dict(_resource().to_target(), path))


def test_no_custom_fields_is_unsigned_shape() -> None:
    raw = _resource().to_target()
    del raw["custom"]
    with pytest.raises(ReleaseFormatError, match=r"custom\.coffer"):
        parse_target(TargetFile.from_dict(raw, "resources/models/yolo.onnx"))
