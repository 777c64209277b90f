"""The encrypted Docker image archive: a small header, then the encrypted stream.

Layout (``docs/archive-format.md``)::

    magic       8 bytes   b"COFFERAR"
    version     1 byte    1
    id length   1 byte    1..128
    archive id  n bytes   ASCII, the name rule of coffer.names
    stream      the rest  Tink AES256_GCM_HKDF_1MB streaming AEAD (cofferd.binary_split.stream)
                          of a ``docker save`` tar, associated data ``coffer/v1/archive/<id>``

Every header byte is authenticated: magic and version must equal the only
values this reader accepts, and the id is the associated data of the stream,
so a changed id makes every segment fail. The associated data stays exactly
``coffer/v1/archive/<id>``, so any Tink implementation decrypts the stream given
the key.

The module also reads the plaintext tar as it streams past
(:class:`ManifestReader`): which images its ``manifest.json`` names, without
ever holding more of the tar than one header block and the manifest.
"""

from __future__ import annotations

import json
import re
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from coffer.streams import write_all
from cofferd.binary_split import stream
from cofferd.errors import BadName, BadRequest, DecryptionError
from cofferd.names import check_name

MAGIC = b"COFFERAR"
VERSION = 1
_FIXED = struct.Struct(">8sBB")  # magic, version, id length
MAX_ID_LENGTH = 128  # the name rule's
#: Ciphertext bytes read from an archive at a time.
READ_CHUNK = stream.SEGMENT_SIZE


@dataclass(frozen=True)
class ArchiveHeader:
    """What precedes the encrypted stream."""

    archive_id: str
    version: int = VERSION

    def encode(self) -> bytes:
        raw_id = check_name(self.archive_id, "archive id").encode("ascii")
        return _FIXED.pack(MAGIC, self.version, len(raw_id)) + raw_id

    @property
    def size(self) -> int:
        return _FIXED.size + len(self.archive_id)


def read_header(src: BinaryIO) -> ArchiveHeader:
    """Read and check the header at ``src``'s position; the stream follows it.

    Anything but a header this version writes raises :class:`DecryptionError`
    with a message that says what is wrong (none of it is secret).
    """
    fixed = _read_exactly(src, _FIXED.size)
    magic, version, id_length = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise DecryptionError("not a coffer image archive (wrong magic bytes)")
    if version != VERSION:
        raise DecryptionError(f"unsupported archive format version {version}")
    if not 1 <= id_length <= MAX_ID_LENGTH:
        raise DecryptionError("damaged archive header: the archive id is invalid")
    raw_id = _read_exactly(src, id_length)
    try:
        archive_id = check_name(raw_id.decode("ascii"), "archive id")
    except (UnicodeDecodeError, BadName) as exc:
        raise DecryptionError("damaged archive header: the archive id is invalid") from exc
    return ArchiveHeader(archive_id, version)


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise DecryptionError("damaged archive: shorter than its header")
    return data


@dataclass(frozen=True)
class ArchiveInfo:
    """What ``coffer archive inspect`` shows: sizes and the id, never a key."""

    archive_id: str
    version: int
    file_size: int
    header_size: int
    stream_size: int
    segments: int
    plaintext_size: int


def inspect(src: BinaryIO, file_size: int) -> ArchiveInfo:
    """Describe the archive at the start of ``src`` (``file_size`` bytes long).

    Checks the header and that the stream's length is one a ciphertext can
    have; whether it decrypts needs the key.
    """
    header = read_header(src)
    stream_size = file_size - header.size
    try:
        plain = stream.plaintext_size(stream_size)
    except ValueError as exc:
        raise DecryptionError("damaged archive: the encrypted stream is truncated") from exc
    body = stream_size - stream.HEADER_SIZE
    segments = (body - plain) // stream.TAG_SIZE
    return ArchiveInfo(
        archive_id=header.archive_id,
        version=header.version,
        file_size=file_size,
        header_size=header.size,
        stream_size=stream_size,
        segments=segments,
        plaintext_size=plain,
    )


def seal(
    src: BinaryIO,
    dst: BinaryIO,
    archive_id: str,
    key: bytes,
    *,
    on_progress: Callable[[int], None] | None = None,
    tap: Callable[[bytes], None] | None = None,
) -> int:
    """Write the archive of the tar read from ``src`` to ``dst``; the plaintext size.

    ``on_progress`` gets the number of plaintext bytes read so far, once per
    chunk; ``tap`` sees each plaintext chunk (e.g. :meth:`ManifestReader.feed`).
    OSError from either file propagates.
    """
    header = ArchiveHeader(archive_id)
    write_all(dst, memoryview(header.encode()))
    done = 0

    def chunks() -> Iterator[bytes]:
        nonlocal done
        while chunk := src.read(READ_CHUNK):
            done += len(chunk)
            if tap is not None:
                tap(chunk)
            if on_progress is not None:
                on_progress(done)
            yield chunk

    ad = stream.archive_associated_data(archive_id)
    for piece in stream.encrypt_chunks(chunks(), key, ad):
        write_all(dst, memoryview(piece))
    return done


def decrypt(
    src: BinaryIO,
    key: bytes,
    header: ArchiveHeader,
    *,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """Verified plaintext of the stream after ``header`` (``src`` positioned there).

    A segment's plaintext comes out only after its tag verified; the last one
    only once the stream is known to end where it should. Any failure raises
    :class:`DecryptionError`, so whatever came out before is a verified prefix.
    ``on_read`` gets the number of ciphertext bytes read so far (header included).
    """
    done = header.size

    def chunks() -> Iterator[bytes]:
        nonlocal done
        while chunk := src.read(READ_CHUNK):
            done += len(chunk)
            if on_read is not None:
                on_read(done)
            yield chunk

    ad = stream.archive_associated_data(header.archive_id)
    yield from stream.decrypt_chunks(chunks(), key, ad)


# -- the docker save tar, read as it streams past ---------------------------------

_BLOCK = 512
_CONFIG_NAME = re.compile(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?")
#: A ``manifest.json`` larger than this is refused rather than held in memory.
MAX_MANIFEST_BYTES = 4 << 20
_MAX_NAME_RECORD = 64 << 10


@dataclass(frozen=True)
class ManifestImage:
    """One image a ``docker save`` manifest names: its id and tags."""

    id: str
    tags: tuple[str, ...]


class ManifestReader:
    """Follows a tar stream block by block, keeping ``manifest.json`` and image ids.

    Feed it every byte of the tar in order (:meth:`feed`); it parses member
    headers with :meth:`tarfile.TarInfo.frombuf` and skips member data, so it
    holds one header block and, when it passes by, the manifest. It never
    raises from :meth:`feed`: the engine judges the tar; a tar this reader
    cannot follow shows as :meth:`images` raising :class:`BadRequest`.
    """

    def __init__(self) -> None:
        self._block = bytearray()
        self._skip = 0  # member data (and padding) still to pass
        self._capture: bytearray | None = None  # data of the member being kept
        self._capture_left = 0
        self._capture_kind = ""
        self._next_name: str | None = None  # from a pax or GNU long-name record
        self._manifest: bytes | None = None
        self._problem: str | None = None
        self._done = False
        #: Ids (``sha256:...``) of image configs seen so far: what a load could create.
        self.candidate_ids: set[str] = set()

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self._done:
            if self._skip:
                n = min(self._skip, len(view))
                if self._capture is not None and self._capture_left:
                    take = min(n, self._capture_left)
                    self._capture += view[:take]
                    self._capture_left -= take
                    if not self._capture_left:
                        self._captured()
                view = view[n:]
                self._skip -= n
                continue
            take = min(_BLOCK - len(self._block), len(view))
            self._block += view[:take]
            view = view[take:]
            if len(self._block) == _BLOCK:
                self._member(bytes(self._block))
                self._block.clear()

    def _member(self, block: bytes) -> None:
        if block == bytes(_BLOCK):  # end of archive
            self._done = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            self._stop("the image tar has a damaged member header")
            return
        name, self._next_name = self._next_name or info.name, None
        self._skip = -(-info.size // _BLOCK) * _BLOCK
        self._capture = None
        kind = ""
        if info.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME):
            kind = info.type.decode()
            limit = _MAX_NAME_RECORD
        elif info.isreg() and name.removeprefix("./") == "manifest.json":
            kind = "manifest"
            limit = MAX_MANIFEST_BYTES
        elif info.isreg() and (match := _CONFIG_NAME.fullmatch(name.removeprefix("./"))):
            self.candidate_ids.add(f"sha256:{match.group(1)}")
        if kind:
            if info.size > limit:
                self._stop(f"the image tar's {kind} record is too large")
                return
            self._capture, self._capture_left, self._capture_kind = bytearray(), info.size, kind
            if not info.size:
                self._captured()

    def _captured(self) -> None:
        data, self._capture = bytes(self._capture or b""), None
        if self._capture_kind == "manifest":
            self._manifest = data
        elif self._capture_kind == "L":
            self._next_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        else:
            self._next_name = _pax_path(data)

    def _stop(self, problem: str) -> None:
        self._problem = problem
        self._done = True

    def images(self) -> list[ManifestImage]:
        """The images ``manifest.json`` names, once the whole tar went past."""
        if self._problem is not None:
            raise BadRequest(self._problem)
        if self._manifest is None:
            raise BadRequest("the image tar has no manifest.json (not a docker save archive)")
        return parse_manifest(self._manifest)


def parse_manifest(raw: bytes) -> list[ManifestImage]:
    """The images of a ``docker save`` ``manifest.json`` (legacy and OCI layouts)."""
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise BadRequest("the image tar's manifest.json is not JSON") from exc
    if not isinstance(entries, list) or not entries:
        raise BadRequest("the image tar's manifest.json names no image")
    images = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadRequest("the image tar's manifest.json has an entry it cannot read")
        config = entry.get("Config")
        tags = entry.get("RepoTags") or []
        match = _CONFIG_NAME.fullmatch(config) if isinstance(config, str) else None
        if match is None or not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("the image tar's manifest.json has an entry it cannot read")
        images.append(ManifestImage(id=f"sha256:{match.group(1)}", tags=tuple(tags)))
    return images


def _pax_path(data: bytes) -> str | None:
    # Records are "<length> <key>=<value>\n"; only the path matters here.
    for record in data.split(b"\n"):
        _, _, field = record.partition(b" ")
        key, sep, value = field.partition(b"=")
        if sep and key == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


__all__ = [
    "MAGIC",
    "MAX_MANIFEST_BYTES",
    "VERSION",
    "ArchiveHeader",
    "ArchiveInfo",
    "ManifestImage",
    "ManifestReader",
    "decrypt",
    "inspect",
    "parse_manifest",
    "read_header",
    "seal",
]
