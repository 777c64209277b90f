"""The device's index: what the cache holds, the sealed resource records, a few facts.

One SQLite database under the state dir (``<state_dir>/index.sqlite3``), shared
by the cache (entries, last use, pins) and the offline lease records, so that
a listing of the cache can say when each entry's lease ends, and a crash can
never leave the two disagreeing about what exists.

Tables:

- ``entries``: one row per big part in the cache dir: where its file is,
  its size, when it was last used (kept here, not in the file's atime, which
  ``noatime`` mounts never update), and while a download runs, nothing:
  a row appears only once the file is in place.
- ``pins``: resources whose cached version is never evicted.
- ``records``: per resource, its latest version's record sealed by the
  caller (the key, small part and lease, encrypted with the device key: this
  module never sees them in the clear) and the lease's expiry in clear, so
  listings need no device key.
- ``releases``: per target path (``resources/<folder>/<name>``,
  ``archives/<id>``), the highest version this device has verified and the
  last verified release (its signed target, JSON: digests, no secret), for
  rollback refusals and offline use; kept across restarts, eviction and
  logout, erased only when another root of trust is pinned.
- ``meta``: small named facts (the trusted clock's high-water mark).

Crash safety is SQLite's (WAL, one transaction per change). The cache dir
may be emptied behind the daemon's back (it is a systemd ``CacheDirectory``):
:meth:`Index.reconcile` makes ``entries`` agree with the files present at
start. A database that cannot be read is moved aside and started afresh:
entries are rebuilt from the directory, records are lost (offline use then
waits for the next contact with the upstream).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cofferd.errors import StateUnwritable

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    plaintext_size INTEGER NOT NULL,
    last_used REAL NOT NULL,
    PRIMARY KEY (folder, name, version)
);
CREATE TABLE IF NOT EXISTS pins (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS records (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    lease_expires REAL,
    sealed BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS releases (
    path TEXT PRIMARY KEY,
    highest INTEGER NOT NULL,
    target TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


_SELECT_ENTRIES = (
    "SELECT e.folder, e.name, e.version, e.file, e.size, e.plaintext_size, e.last_used,"
    " p.name IS NOT NULL FROM entries e"
    " LEFT JOIN pins p ON p.folder = e.folder AND p.name = e.name "
)


@dataclass(frozen=True)
class Entry:
    """A big part in the cache: ``file`` is relative to the cache root."""

    folder: str
    name: str
    version: int
    file: str
    size: int
    plaintext_size: int
    last_used: float
    pinned: bool = False


@dataclass(frozen=True)
class Record:
    """A resource's sealed record (opaque here) and its lease's expiry."""

    folder: str
    name: str
    version: int
    lease_expires: float | None
    sealed: bytes
    updated: float

    def __repr__(self) -> str:  # sealed holds a key, even if encrypted: keep it short
        return (
            f"Record(folder={self.folder!r}, name={self.name!r}, version={self.version},"
            f" lease_expires={self.lease_expires})"
        )


class Index:
    """The index database; thread-safe, each method one short transaction.

    The lock is never held across anything but SQLite on a local file.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        #: Why the last write failed, until one succeeds (None: writable as far as known).
        self.write_error: str | None = None
        self._db = self._open(path)
        self.writable()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last transactions, never
        # tear one; the cache is rebuilt from the directory anyway.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def _open(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return self._connect(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{int(self._clock())}")
            log.warning(
                "index %s is unreadable (%s); moved to %s, starting afresh", path, exc, aside
            )
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            return self._connect(path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a state dir that refuses it is :class:`StateUnwritable`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # Read-only file or mount, full disk, I/O error: the state is
                # as it was; loads that need no write go on.
                self._unwritable(str(exc))
                raise StateUnwritable(
                    f"the state dir cannot be written ({self._path}: {exc})"
                ) from None
            if self.write_error is not None:
                log.info("index %s is writable again", self._path)
                self.write_error = None

    def _unwritable(self, why: str) -> None:
        if self.write_error is None:
            log.error("index %s cannot be written: %s; changes are not kept", self._path, why)
        self.write_error = why

    def writable(self) -> bool:
        """Whether a write goes through now (one rolled back); :attr:`write_error` says why not."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('writable', '')")
                finally:
                    self._db.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                self._unwritable(str(exc))
                return False
        if self.write_error is not None:
            log.info("index %s is writable again", self._path)
        self.write_error = None
        return self.write_error is None

    # -- cache entries -------------------------------------------------------

    def add_entry(
        self, folder: str, name: str, version: int, file: str, size: int, plaintext_size: int
    ) -> Entry:
        """Record a big part now in place; its last use is now."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (folder, name, version, file, size, plaintext_size, now),
            )
        return Entry(
            folder, name, version, file, size, plaintext_size, now, self.is_pinned(folder, name)
        )

    def touch(self, folder: str, name: str, version: int) -> None:
        """Mark an entry used now (it moves to the back of the eviction order)."""
        with self._tx() as db:
            db.execute(
                "UPDATE entries SET last_used = ? WHERE folder = ? AND name = ? AND version = ?",
                (self._clock(), folder, name, version),
            )

    def remove_entry(self, folder: str, name: str, version: int) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM entries WHERE folder = ? AND name = ? AND version = ?",
                (folder, name, version),
            )

    def entry(self, folder: str, name: str, version: int) -> Entry | None:
        rows = self._entries(
            "WHERE e.folder = ? AND e.name = ? AND e.version = ?", (folder, name, version)
        )
        return rows[0] if rows else None

    def entries(self, folder: str | None = None) -> list[Entry]:
        """Every entry (of ``folder``), most recently used first."""
        if folder is None:
            return self._entries("ORDER BY e.last_used DESC", ())
        return self._entries("WHERE e.folder = ? ORDER BY e.last_used DESC", (folder,))

    def eviction_order(self) -> list[Entry]:
        """Unpinned entries, least recently used first: who goes first when room is needed."""
        return [e for e in self._entries("ORDER BY e.last_used ASC", ()) if not e.pinned]

    def total_size(self) -> int:
        with self._lock:
            (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
        return int(total)

    def _entries(self, where: str, args: tuple[object, ...]) -> list[Entry]:
        # ``where`` is always one of this class's literals; values are bound.
        query = _SELECT_ENTRIES + where
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [
            Entry(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5]), float(r[6]), bool(r[7]))
            for r in rows
        ]

    def reconcile(self, present: Iterable[Entry]) -> tuple[int, int]:
        """Make ``entries`` match the files found in the cache dir; (added, dropped).

        ``present`` is what a scan of the directory found; files the index
        did not know are added with the last use the scan gave them (their
        mtime), rows without a file are dropped.
        """
        found = {(e.folder, e.name, e.version): e for e in present}
        with self._tx() as db:
            known = {
                (r[0], r[1], int(r[2])): r[3]
                for r in db.execute("SELECT folder, name, version, file FROM entries")
            }
            dropped = [k for k, file in known.items() if k not in found or found[k].file != file]
            db.executemany(
                "DELETE FROM entries WHERE folder = ? AND name = ? AND version = ?", dropped
            )
            added = [e for k, e in found.items() if k not in known or known[k] != e.file]
            db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.folder, e.name, e.version, e.file, e.size, e.plaintext_size, e.last_used)
                    for e in added
                ],
            )
        return len(added), len(dropped)

    # -- pins ----------------------------------------------------------------

    def set_pinned(self, folder: str, name: str, pinned: bool) -> None:
        with self._tx() as db:
            if pinned:
                db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (folder, name))
            else:
                db.execute("DELETE FROM pins WHERE folder = ? AND name = ?", (folder, name))

    def is_pinned(self, folder: str, name: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM pins WHERE folder = ? AND name = ?", (folder, name)
            ).fetchone()
        return row is not None

    # -- sealed records (offline use) ---------------------------------------

    def put_record(
        self, folder: str, name: str, version: int, lease_expires: float | None, sealed: bytes
    ) -> None:
        """Store ``folder/name``'s record, replacing any older version's."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                (folder, name, version, lease_expires, sealed, self._clock()),
            )

    def record(self, folder: str, name: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT folder, name, version, lease_expires, sealed, updated FROM records"
                " WHERE folder = ? AND name = ?",
                (folder, name),
            ).fetchone()
        return None if row is None else _record(row)

    def records(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT folder, name, version, lease_expires, sealed, updated FROM records"
                " ORDER BY folder, name"
            ).fetchall()
        return [_record(r) for r in rows]

    def delete_record(self, folder: str, name: str) -> bool:
        """Erase ``folder/name``'s record; whether there was one."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM records WHERE folder = ? AND name = ?", (folder, name))
        return cur.rowcount > 0

    def clear_records(self) -> int:
        """Erase every record (logout); how many there were."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM records")
        return cur.rowcount

    # -- verified releases (trust) --------------------------------------------

    def release(self, path: str) -> tuple[int, str] | None:
        """``(highest version verified, last verified target JSON)`` of ``path``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT highest, target FROM releases WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def remember_release(self, path: str, version: int, target: str) -> int:
        """Keep ``target`` as ``path``'s last verified release, never lowering the highest.

        Returns the highest version now; an older ``version`` changes nothing.
        """
        with self._tx() as db:
            row = db.execute("SELECT highest FROM releases WHERE path = ?", (path,)).fetchone()
            if row is not None and int(row[0]) > version:
                return int(row[0])
            db.execute(
                "INSERT OR REPLACE INTO releases VALUES (?, ?, ?, ?)",
                (path, version, target, self._clock()),
            )
        return version

    def clear_releases(self) -> int:
        """Forget every verified release (another root of trust); how many there were."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM releases")
        return cur.rowcount

    # -- meta ----------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def raise_meta_float(self, key: str, value: float) -> float:
        """Set ``key`` to ``value`` if that is higher (a high-water mark); the result."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            current = float(row[0]) if row is not None else float("-inf")
            if value > current:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, repr(value)))
                return value
        return current


def _record(row: tuple[object, ...]) -> Record:
    folder, name, version, expires, sealed, updated = row
    return Record(
        folder=str(folder),
        name=str(name),
        version=int(version),  # type: ignore[call-overload]
        lease_expires=None if expires is None else float(expires),  # type: ignore[arg-type]
        sealed=bytes(sealed),  # type: ignore[call-overload]
        updated=float(updated),  # type: ignore[arg-type]
    )
