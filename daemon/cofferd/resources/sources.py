"""Where a load reads a big part from: the cached file, a download it follows, or the CDN.

Each has ``readinto`` for the decryption, ``from_cache``, and says whether
the decryption authenticated every byte (a download may then land in the
cache) or found a bad one.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from cofferd.binary_split.pipeline import chunk_reader
from cofferd.resources.flight import Follower


class CachedSource:
    """``readinto`` over a cached big part; its I/O errors mean "fetch it again"."""

    from_cache = True

    def __init__(self, file: io.FileIO) -> None:
        self._file = file

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._file.readinto(buffer) or 0
        except OSError as exc:
            raise SourceError(exc.strerror or "read failed") from exc

    def authenticated(self) -> None:
        pass

    def failed_authentication(self) -> None:
        pass


class StreamSource:
    """``readinto`` straight over the CDN's chunks: a load the cache has no room for."""

    from_cache = False

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._read = chunk_reader(chunks)

    def readinto(self, buffer: memoryview) -> int:
        return len(self._read(buffer))

    def authenticated(self) -> None:
        pass

    def failed_authentication(self) -> None:
        pass


Source = CachedSource | StreamSource | Follower


class SourceError(Exception):
    """Reading the cached big part failed (an I/O error, not the caller's)."""
