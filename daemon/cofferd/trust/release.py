"""A release: the fields a publisher signs and a device checks (docs/trust.md).

A release is one TUF target of the delegated ``publishers`` role:
``resources/<folder>/<name>`` for a resource, ``archives/<id>`` for an image
archive. The target's ``length`` and ``hashes`` describe what a device checks
directly (a resource's small part, an archive's whole file); the fields under
``custom.coffer`` say the rest. This module is the one place that writes and
reads that shape: the publisher's side builds a release with
:meth:`ResourceRelease.to_target`, a device reads one with
:func:`parse_target`, and both compute :func:`key_commitment` and the
segment manifest (:class:`SegmentDigests`) the same way.

Parsing is strict: a field missing, of the wrong type or out of range is a
:class:`ReleaseFormatError`, so nothing downstream meets a half-valid
release. Messages name the field, never a value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from tuf.api.metadata import TargetFile

__all__ = [
    "DIGEST_SIZE",
    "SEGMENT_SIZE",
    "ArchiveRelease",
    "ReleaseFormatError",
    "ResourceRelease",
    "SegmentDigests",
    "archive_path",
    "key_commitment",
    "parse_target",
    "resource_path",
    "segment_count",
]

#: The chunk size of the segment manifest: a device checks the big part in
#: chunks of this size before it releases the plaintext of any byte in one.
SEGMENT_SIZE = 1 << 20
#: One SHA-256 digest in the manifest, raw.
DIGEST_SIZE = 32

_KEY_COMMITMENT_CONTEXT = b"coffer/v1/key-commitment\x00"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_INT = 2**63 - 1


class ReleaseFormatError(ValueError):
    """A target whose coffer fields are missing or malformed."""


def resource_path(folder: str, name: str) -> str:
    """The target path of a resource: ``resources/<folder>/<name>``."""
    return f"resources/{folder}/{name}"


def archive_path(archive_id: str) -> str:
    """The target path of an image archive: ``archives/<archive_id>``."""
    return f"archives/{archive_id}"


def key_commitment(key: bytes, associated_data: bytes) -> str:
    """HMAC-SHA256 of the associated data under the key, hex.

    It binds the key the upstream hands out to the resource or archive it is
    for, and reveals nothing of the key: a device recomputes it from the key
    it was given and compares in constant time (:func:`hmac.compare_digest`).
    """
    return hmac.new(key, _KEY_COMMITMENT_CONTEXT + associated_data, hashlib.sha256).hexdigest()


def segment_count(big_size: int, segment_size: int = SEGMENT_SIZE) -> int:
    """How many chunks (and digests) a big part of ``big_size`` bytes has."""
    return -(-big_size // segment_size)


class SegmentDigests:
    """The segment manifest of a stream of bytes, fed in pieces of any size.

    ``update`` as the big part goes by, ``finish`` once at its end: the
    manifest (the raw digests, concatenated) and its SHA-256 in hex.
    """

    def __init__(self, segment_size: int = SEGMENT_SIZE) -> None:
        if segment_size < 1:
            raise ValueError("segment_size must be >= 1")
        self.segment_size = segment_size
        self._digests: list[bytes] = []
        self._current = hashlib.sha256()
        self._filled = 0
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise RuntimeError("update after finish")
        view = memoryview(data).cast("B")
        while view:
            take = min(len(view), self.segment_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.segment_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha256()
                self._filled = 0

    def finish(self) -> tuple[bytes, str]:
        """The manifest and its SHA-256 (hex); call once, after the last byte."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        if self._filled:
            self._digests.append(self._current.digest())
        manifest = b"".join(self._digests)
        return manifest, hashlib.sha256(manifest).hexdigest()


@dataclass(frozen=True)
class ResourceRelease:
    """One signed version of a resource: everything a device checks before delivery."""

    folder: str
    name: str
    version: int
    small_size: int
    small_sha256: str
    key_commitment: str
    big_size: int
    big_sha256: str
    plaintext_size: int
    segment_size: int
    segments_sha256: str

    @property
    def path(self) -> str:
        return resource_path(self.folder, self.name)

    def to_target(self) -> dict[str, Any]:
        """The target as TUF's JSON (``length``, ``hashes``, ``custom``)."""
        return {
            "length": self.small_size,
            "hashes": {"sha256": self.small_sha256},
            "custom": {
                "coffer": {
                    "kind": "resource",
                    "version": self.version,
                    "key_commitment": self.key_commitment,
                    "big_size": self.big_size,
                    "big_sha256": self.big_sha256,
                    "plaintext_size": self.plaintext_size,
                    "segment_size": self.segment_size,
                    "segments_sha256": self.segments_sha256,
                }
            },
        }


@dataclass(frozen=True)
class ArchiveRelease:
    """A signed image archive: its file's size and digest, and its key's commitment."""

    archive_id: str
    length: int
    sha256: str
    key_commitment: str

    @property
    def path(self) -> str:
        return archive_path(self.archive_id)

    def to_target(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "hashes": {"sha256": self.sha256},
            "custom": {"coffer": {"kind": "archive", "key_commitment": self.key_commitment}},
        }


def parse_target(target: TargetFile) -> ResourceRelease | ArchiveRelease:
    """The release a verified target describes (:class:`ReleaseFormatError` if malformed)."""
    kind, rest = _split_path(target.path)
    sha256 = target.hashes.get("sha256")
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise ReleaseFormatError("target: hashes.sha256 is missing or not 64 lowercase hex")
    custom = target.custom.get("coffer") if isinstance(target.custom, dict) else None
    if not isinstance(custom, dict):
        raise ReleaseFormatError("target: custom.coffer is missing or not an object")
    if custom.get("kind") != kind:
        raise ReleaseFormatError(f"target: custom.coffer.kind is not {kind!r}")
    if kind == "archive":
        return ArchiveRelease(
            archive_id=rest,
            length=target.length,
            sha256=sha256,
            key_commitment=_hex(custom, "key_commitment"),
        )
    folder, _, name = rest.partition("/")
    if not folder or not name or "/" in name:
        raise ReleaseFormatError("target: a resource path is resources/<folder>/<name>")
    segment_size = _int(custom, "segment_size", minimum=1)
    return ResourceRelease(
        folder=folder,
        name=name,
        version=_int(custom, "version", minimum=1),
        small_size=target.length,
        small_sha256=sha256,
        key_commitment=_hex(custom, "key_commitment"),
        big_size=_int(custom, "big_size"),
        big_sha256=_hex(custom, "big_sha256"),
        plaintext_size=_int(custom, "plaintext_size"),
        segment_size=segment_size,
        segments_sha256=_hex(custom, "segments_sha256"),
    )


def _split_path(path: str) -> tuple[str, str]:
    top, _, rest = path.partition("/")
    if top == "resources" and rest:
        return "resource", rest
    if top == "archives" and rest and "/" not in rest:
        return "archive", rest
    raise ReleaseFormatError("target: the path is neither resources/... nor archives/...")


def _int(obj: dict[str, Any], field: str, minimum: int = 0) -> int:
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_INT:
        raise ReleaseFormatError(f"target: custom.coffer.{field} is not an integer >= {minimum}")
    return value


def _hex(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ReleaseFormatError(f"target: custom.coffer.{field} is not 64 lowercase hex")
    return value
