"""The model cache dir: big parts, by folder/name/version, verified before they land.

Layout: ``<cache_dir>/big/<folder>/<name>/<version>-<sha256>``; names follow
:mod:`coffer.names`, so each is a safe single path component. Temporary
files start with a dot, which no name may, so they never clash with an entry.

Invariants:

- An entry appears only by ``rename`` of a temporary file whose size and
  sha256 matched what the upstream announced; a failed or abandoned download
  removes its temporary file. Readers therefore never see a partial file.
- Storing a version evicts the older versions of the same resource.
- Temporary files of a process that died mid-download are removed when the
  next process builds its :class:`BigPartCache`.
- A cached file is not trusted blindly: it is decrypted with authentication
  on every read, and the caller evicts it if that fails. That is also why
  entries are not fsynced: a file torn by a power cut fails authentication
  and is fetched again, at the cost of one download rather than of a
  disk flush on every store.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from coffer.streams import write_all
from cofferd.errors import CorruptData
from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

_TEMP_PREFIX = ".tmp-"


class BigPartCache:
    """Verified big parts under one directory, shared by the threads of one process.

    Build one per cache dir per process, at start-up: building it removes the
    temporary files a process that died mid-download left behind.
    """

    def __init__(self, cache_dir: Path) -> None:
        self._root = cache_dir / "big"
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        removed = self.remove_temporary()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted download", removed)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, info: ResourceInfo) -> Path:
        return self._root / info.folder / info.name / f"{info.version}-{info.big_sha256}"

    def lookup(self, info: ResourceInfo) -> Path | None:
        """The entry for ``info``'s version if present with the announced size, else None."""
        path = self.path_for(info)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            # An unusable cache dir costs a download, not the load.
            log.warning("cannot use the cache for %s/%s: %s", info.folder, info.name, exc.strerror)
            return None
        if size != info.big_size:
            # Cannot come from store(); someone else wrote it. Not ours to trust.
            self.evict(path)
            return None
        return path

    @contextlib.contextmanager
    def lock(self, info: ResourceInfo) -> Iterator[None]:
        """Serialise downloads of one resource, so concurrent cold loads fetch it once."""
        key = (info.folder, info.name)
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def writer(self, info: ResourceInfo) -> CacheWriter:
        """A temporary file that becomes ``info``'s entry on :meth:`CacheWriter.commit`.

        Raises OSError if the cache dir cannot take it.
        """
        directory = self.path_for(info).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return CacheWriter(self, info, directory)

    def new_temporary(self, info: ResourceInfo) -> tuple[int, Path]:
        """An empty temporary file beside ``info``'s entry, open for writing: (fd, path).

        Raises OSError if the cache dir cannot take it.
        """
        directory = self.path_for(info).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX)
        return fd, Path(name)

    def evict(self, path: Path) -> None:
        if _remove(path, "evict"):
            log.info("evicted %s from the cache", path.relative_to(self._root))

    def evict_older(self, info: ResourceInfo) -> None:
        """Remove every entry of ``info``'s resource older than its version."""
        directory = self.path_for(info).parent
        keep = self.path_for(info).name
        try:
            entries = list(directory.iterdir())
        except OSError as exc:
            log.warning("cannot list the cache of %s/%s: %s", info.folder, info.name, exc.strerror)
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name == keep:
                continue
            version, _, _ = entry.name.partition("-")
            if not version.isdigit() or int(version) <= info.version:
                self.evict(entry)

    def remove_temporary(self) -> int:
        """Remove temporary files left by a process that died mid-download.

        Only for start-up, when no download of this process can be under way.
        A file that cannot be removed is logged and left: it costs disk space,
        not correctness (no name can match it).
        """
        try:
            leftovers = list(self._root.glob(f"*/*/{_TEMP_PREFIX}*"))
        except OSError as exc:
            log.warning("cannot look for leftovers in the cache: %s", exc.strerror)
            return 0
        return sum(_remove(path, "remove") for path in leftovers)


def _remove(path: Path, verb: str) -> bool:
    """Unlink ``path``; False if it was gone already or cannot go (logged)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot %s %s from the cache: %s", verb, path.name, exc.strerror)
        return False
    return True


class CacheWriter:
    """One download on its way into the cache; removed unless committed."""

    def __init__(self, cache: BigPartCache, info: ResourceInfo, directory: Path) -> None:
        self._cache = cache
        self._info = info
        fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._sha = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._size += len(data)
        write_all(self._file, data)

    def commit(self) -> Path:
        """Check size and sha256, then rename into place; raises CorruptData on a mismatch."""
        self._file.close()
        if self._size != self._info.big_size or self._sha.hexdigest() != self._info.big_sha256:
            self.abort()
            raise CorruptData("the big part does not match its announced size and sha256")
        target = self._cache.path_for(self._info)
        os.replace(self._path, target)
        self._done = True
        self._cache.evict_older(self._info)
        return target

    def abort(self) -> None:
        """Drop the temporary file; harmless after commit or a previous abort."""
        if self._done:
            return
        self._done = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BackgroundWriter:
    """Feeds a :class:`CacheWriter` from a thread of its own.

    On a cold load one thread receives the big part and copies it into the
    decryption's buffers; hashing it and writing it to disk here, on another
    thread, overlaps with that (hashlib and file writes release the GIL).
    At most ``depth`` chunks wait, so memory stays bounded. A write that fails
    (a full disk) stops caching, not the load: :meth:`commit` then stores
    nothing and returns None.
    """

    def __init__(self, writer: CacheWriter, depth: int = 16) -> None:
        self._writer = writer
        self._depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cache-writer")
        self._pending: deque[Future[None]] = deque()
        self._error: OSError | None = None

    def write(self, chunk: bytes) -> None:
        """Queue ``chunk``; the caller must not change it afterwards (pass ``bytes``)."""
        if self._error is not None:
            return
        while len(self._pending) >= self._depth:
            self._reap(self._pending.popleft())
        self._pending.append(self._pool.submit(self._writer.write, chunk))

    def commit(self) -> Path | None:
        """Wait for every write, then store the entry; CorruptData on a size/sha mismatch."""
        self._drain()
        if self._error is not None:
            self._writer.abort()
            return None
        return self._writer.commit()

    def abort(self) -> None:
        """Stop and drop the temporary file; harmless after commit."""
        for future in self._pending:
            future.cancel()
        self._drain()
        self._writer.abort()

    def _drain(self) -> None:
        while self._pending:
            self._reap(self._pending.popleft())
        self._pool.shutdown(wait=True)

    def _reap(self, future: Future[None]) -> None:
        if future.cancelled():
            return
        try:
            future.result()
        except OSError as exc:
            if self._error is None:
                log.warning("cannot cache the big part: %s", exc.strerror)
                self._error = exc
