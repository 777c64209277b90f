"""The managed cache: bounded, least recently used out first, pinned entries kept.

:class:`ManagedCache` puts policy over the files of
:class:`~cofferd.resources.cache.BigPartCache` and the rows of the device's
:class:`~cofferd.resources.index.Index`:

- Room: at most ``max_bytes`` held (0: no cap of its own) and at least
  ``min_free_bytes`` left free on the cache's file system, counting the
  bytes of downloads under way. Room for a download is made before it starts
  by evicting entries, least recently used first (the index's last use, not
  atime); an entry in use (a reader has it open, or it is being written) and
  a pinned entry are never evicted.
- A load that finds no room streams from the CDN without caching; the log
  and ``status`` (``last_uncached``) say so.
- One download per resource version (:class:`~cofferd.resources.flight.Flight`).
- At start the index is made to agree with the files present (a lost or
  stale index is rebuilt from the directory; crash leftovers were removed by
  :class:`BigPartCache`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cofferd.errors import Conflict, NotFound, OfflineRefused, StateUnwritable, TooLarge
from cofferd.resources.cache import BigPartCache
from cofferd.resources.flight import BigSource, Flight, Follower, State
from cofferd.resources.index import Entry, Index
from cofferd.resources.segments import SignedSegments, check_manifest, verified
from cofferd.resources.sources import CachedSource, Source, StreamSource
from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

Key = tuple[str, str, int]


@dataclass(frozen=True)
class Uncached:
    """The last load that found no room in the cache."""

    folder: str
    name: str
    version: int
    size: int
    reason: str
    at: float


#: Seconds a cold load waits, after its own pass, for the download to land.
LAND_WAIT = 10.0

#: "The download landed meanwhile": :meth:`ManagedCache._flight_for` to its caller.
_LANDED = object()


def _key(info: ResourceInfo) -> Key:
    return (info.folder, info.name, info.version)


class ManagedCache:
    """The cache's policy; thread-safe. See the module docstring."""

    def __init__(
        self,
        big: BigPartCache,
        index: Index,
        source: BigSource,
        *,
        max_bytes: int = 0,
        min_free_bytes: int = 0,
        free_bytes: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.big = big
        self.index = index
        self._source = source
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._free_bytes = free_bytes or self._statvfs_free
        self._clock = clock
        self._lock = threading.Lock()
        self._users: Counter[Key] = Counter()
        self._flights: dict[Key, Flight] = {}
        self.last_uncached: Uncached | None = None
        added, dropped = index.reconcile(self._scan())
        if added or dropped:
            log.info(
                "cache index rebuilt: %d entries found on disk, %d rows dropped", added, dropped
            )

    @property
    def root(self) -> Path:
        """The cache's directory of big parts."""
        return self.big.root

    # -- reading -------------------------------------------------------------

    @contextlib.contextmanager
    def reading(
        self,
        info: ResourceInfo,
        *,
        need_cache: bool = False,
        cached_only: bool = False,
        segments: SignedSegments | None = None,
    ) -> Iterator[Source]:
        """A source of ``info``'s big part: the cached file, a download to follow, or the CDN.

        The CDN is the source given when the cache was built. The entry
        counts as in use (never evicted) until the block ends.
        With ``need_cache``, no room is :class:`TooLarge` instead of a stream.
        With ``cached_only`` (offline use), an entry not in the cache is
        :class:`OfflineRefused`: nothing is fetched.
        With ``segments`` (a signed release) whatever is fetched is checked chunk
        by chunk before any reader sees it; a cached entry was so checked when
        it landed (its name carries the big part's signed SHA-256).
        FileNotFoundError: the entry went between lookup and open; try again.
        """
        key = _key(info)
        with self._lock:
            self._users[key] += 1
        try:
            while True:
                path = self.big.lookup(info)
                if path is not None:
                    break
                if cached_only:
                    raise OfflineRefused(
                        f"offline use of {info.folder}/{info.name} refused: it is not cached"
                    )
                follower = self._flight_for(info, need_cache, segments)
                if follower is not _LANDED:
                    break
            if path is not None:
                self._note_use(info, path.name)
                with io.FileIO(path, "rb") as file:
                    yield CachedSource(file)
                return
            if follower is None:
                chunks = raw = self._source.iter_big(info.big_url, info.big_size)
                try:
                    if segments is not None:
                        manifest = check_manifest(
                            self._source.manifest(info.folder, info.name, segments), segments
                        )
                        chunks = verified(raw, manifest, segments)
                    yield StreamSource(iter(chunks))
                finally:
                    for stream in (chunks, raw):
                        close = getattr(stream, "close", None)
                        if close is not None:
                            close()
                return
            assert isinstance(follower, Follower)
            try:
                yield follower
            finally:
                follower.close()
            if follower.verified:
                # Its pass let the download land: a rename and a row, a moment.
                # The one wait for it: a load (or pull) that returned left the entry in place.
                follower.wait_landed(LAND_WAIT)
        finally:
            with self._lock:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]

    def _flight_for(
        self, info: ResourceInfo, need_cache: bool, segments: SignedSegments | None = None
    ) -> Follower | object | None:
        """Follow the download of ``info``, started if need be; None (stream) if no room.

        :data:`_LANDED` if a download landed since the caller looked: look again.
        """
        key = _key(info)
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                if self.big.lookup(info) is not None:
                    return _LANDED
                why = self._make_room(info.big_size)
                if why is not None:
                    self._uncached(info, why)
                    if need_cache:
                        raise TooLarge(
                            f"{info.folder}/{info.name} ({info.big_size} bytes) does not fit"
                            f" in the cache: {why}"
                        )
                    return None
                try:
                    tmp = self.big.new_temporary(info)
                except OSError as exc:
                    self._uncached(info, f"cannot create a file in the cache: {exc.strerror}")
                    if need_cache:
                        raise TooLarge(f"cannot cache {info.folder}/{info.name}") from exc
                    return None
                flight = Flight(
                    info,
                    self._source,
                    tmp,
                    self._installer(info),
                    self._landed,
                    segments=segments,
                )
                self._flights[key] = flight
                flight.start()
            return flight.follow()

    def _installer(self, info: ResourceInfo) -> Callable[[Any], None]:
        def install(tmp: Any) -> None:
            target = self.big.install(info, tmp)
            # In place and served without its row if the index cannot take one:
            # the next start's reconcile adds it.
            with contextlib.suppress(StateUnwritable):
                self._add_row(info, target)

        return install

    def _add_row(self, info: ResourceInfo, target: Path) -> None:
        file = str(target.relative_to(self.big.root))
        self.index.add_entry(
            info.folder, info.name, info.version, file, info.big_size, info.plaintext_size
        )
        self._drop_older_rows(info)

    def _landed(self, flight: Flight) -> None:
        with self._lock:
            self._flights.pop(_key(flight.info), None)

    def _note_use(self, info: ResourceInfo, file_name: str) -> None:
        # A load needs no write: without a writable index it serves all the same.
        with contextlib.suppress(StateUnwritable):
            self._write_use(info, file_name)

    def _write_use(self, info: ResourceInfo, file_name: str) -> None:
        if self.index.entry(info.folder, info.name, info.version) is None:
            file = f"{info.folder}/{info.name}/{file_name}"
            self.index.add_entry(
                info.folder, info.name, info.version, file, info.big_size, info.plaintext_size
            )
        else:
            self.index.touch(info.folder, info.name, info.version)

    def _uncached(self, info: ResourceInfo, why: str) -> None:
        log.warning("not caching %s/%s version %d: %s", info.folder, info.name, info.version, why)
        self.last_uncached = Uncached(
            info.folder, info.name, info.version, info.big_size, why, self._clock()
        )

    # -- room ----------------------------------------------------------------

    def _make_room(self, size: int) -> str | None:
        """Evict until ``size`` more bytes fit; None when they do, else why not. Under the lock."""
        while True:
            why = self._why_not(size)
            if why is None:
                return None
            victim = next(
                (e for e in self.index.eviction_order() if _entry_key(e) not in self._users), None
            )
            if victim is None:
                return why
            self._remove(victim, "to make room")

    def _why_not(self, size: int) -> str | None:
        pending = sum(f.info.big_size - f.written for f in self._flights.values())
        held = self.index.total_size() + pending
        if self.max_bytes and held + size > self.max_bytes:
            return f"cache_max_bytes is {self.max_bytes} and {held} bytes are held"
        free = self._free_bytes() - pending
        if free - size < self.min_free_bytes:
            return f"{free} bytes free, cache_min_free_bytes is {self.min_free_bytes}"
        return None

    def _statvfs_free(self) -> int:
        path = self.big.root
        while not path.exists() and path != path.parent:
            path = path.parent  # not made yet: the file system it will be made on
        try:
            st = os.statvfs(path)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _remove(self, entry: Entry, why: str) -> None:
        self.big.evict(self.big.root / entry.file)
        self.index.remove_entry(entry.folder, entry.name, entry.version)
        log.info("evicted %s/%s version %d %s", entry.folder, entry.name, entry.version, why)

    def _drop_older_rows(self, info: ResourceInfo) -> None:
        for entry in self.index.entries(info.folder):
            if entry.name == info.name and entry.version < info.version:
                self.index.remove_entry(entry.folder, entry.name, entry.version)

    # -- management ----------------------------------------------------------

    def evict(self, folder: str, name: str) -> list[Entry]:
        """Drop every cached version of ``folder/name``; Conflict while one is in use."""
        with self._lock:
            entries = [e for e in self.index.entries(folder) if e.name == name]
            if not entries:
                raise NotFound(f"{folder}/{name} is not in the cache")
            busy = [e for e in entries if _entry_key(e) in self._users]
            if busy:
                raise Conflict(f"{folder}/{name} is being read or written; try again later")
            for entry in entries:
                self._remove(entry, "on request")
            return entries

    def prune(self, max_bytes: int) -> list[Entry]:
        """Evict unpinned entries not in use, least recently used first, to <= ``max_bytes``."""
        evicted = []
        with self._lock:
            for entry in self.index.eviction_order():
                if self.index.total_size() <= max_bytes:
                    break
                if _entry_key(entry) in self._users:
                    continue
                self._remove(entry, "by prune")
                evicted.append(entry)
        return evicted

    def drop_bad(self, info: ResourceInfo) -> None:
        """Remove ``info``'s entry, which failed authentication (its readers fail anyway)."""
        self.big.evict(self.big.path_for(info))
        with contextlib.suppress(StateUnwritable):  # the reconcile at start drops it then
            self.index.remove_entry(info.folder, info.name, info.version)

    def drop_entry(self, entry: Entry) -> None:
        """Remove ``entry`` (its file and row) whatever it is; at start, before any load."""
        with self._lock:
            self._remove(entry, "unchecked by trust")

    def in_use(self, entry: Entry) -> bool:
        with self._lock:
            return _entry_key(entry) in self._users

    def status(self) -> dict[str, Any]:
        with self._lock:
            downloads = [
                {
                    "folder": f.info.folder,
                    "filename": f.info.name,
                    "version": f.info.version,
                    "written": f.written,
                    "size": f.info.big_size,
                }
                for f in self._flights.values()
            ]
        last = self.last_uncached
        entries = self.index.entries()
        return {
            "bytes": sum(e.size for e in entries),
            "entries": len(entries),
            "max_bytes": self.max_bytes,
            "free_floor": self.min_free_bytes,
            "downloads": downloads,
            "last_uncached": None if last is None else asdict(last),
            # Loads go on without it; pins, evictions, records and logout need it.
            "state_writable": self.index.writable(),
            "state_error": self.index.write_error,
        }

    def _scan(self) -> list[Entry]:
        """Every entry file under the cache root, as the index would hold it."""
        found = []
        root = self.big.root
        with contextlib.suppress(FileNotFoundError):
            for path in root.glob("*/*/*"):
                version, _, sha = path.name.partition("-")
                if path.name.startswith(".") or not version.isdigit() or len(sha) != 64:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                folder, name = path.parent.parent.name, path.parent.name
                file = str(path.relative_to(root))
                found.append(Entry(folder, name, int(version), file, st.st_size, 0, st.st_mtime))
        return found


def _entry_key(entry: Entry) -> Key:
    return (entry.folder, entry.name, entry.version)


__all__ = ["ManagedCache", "Source", "State"]
