"""SQLite storage: users, resource versions, uploads and archive keys.

One connection shared by the handler threads behind a lock: the metadata is
small and quick, and the big parts never pass through here. :meth:`Store.atomic`
groups several steps (and file renames they depend on) into one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    email TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('reader', 'publisher')),
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    small BLOB NOT NULL,
    key BLOB NOT NULL,
    blob_id TEXT NOT NULL UNIQUE,
    big_size INTEGER NOT NULL,
    big_sha256 TEXT NOT NULL,
    plaintext_size INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER,
    PRIMARY KEY (folder, name, version)
);
CREATE TABLE IF NOT EXISTS retired (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    last_version INTEGER NOT NULL,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    put_size INTEGER,
    put_sha256 TEXT,
    put_fingerprint TEXT,
    committed_version INTEGER
);
CREATE TABLE IF NOT EXISTS archive_keys (
    archive_id TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created_by TEXT NOT NULL
);
"""


class UserExists(Exception):
    pass


@dataclass(frozen=True)
class User:
    email: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class Version:
    folder: str
    name: str
    version: int
    small: bytes
    key: bytes
    blob_id: str
    big_size: int
    big_sha256: str
    plaintext_size: int


@dataclass(frozen=True)
class Listed:
    """A resource as a folder listing shows it: its current version."""

    name: str
    version: int
    plaintext_size: int
    big_size: int
    #: When the version was committed (Unix seconds); None if before this was kept.
    updated_at: int | None


@dataclass(frozen=True)
class Upload:
    upload_id: str
    folder: str
    name: str
    blob_id: str
    expires_at: int
    put_size: int | None
    put_sha256: str | None
    put_fingerprint: str | None
    committed_version: int | None


class Store:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._lock = threading.RLock()
        self._depth = 0
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
        if "created_at" not in columns:
            # A data dir from before listings: its versions' times are unknown (NULL).
            self._db.execute("ALTER TABLE versions ADD COLUMN created_at INTEGER")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction (nesting joins the outer one), exclusive among threads."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            else:
                if outer:
                    self._db.execute("COMMIT")
            finally:
                self._depth -= 1

    # Users

    def add_user(self, email: str, role: str, password_hash: str) -> None:
        try:
            with self.atomic():
                self._db.execute(
                    "INSERT INTO users (email, role, password_hash) VALUES (?, ?, ?)",
                    (email, role, password_hash),
                )
        except sqlite3.IntegrityError as exc:
            raise UserExists(email) from exc

    def user(self, email: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                "SELECT email, role, password_hash FROM users WHERE email = ?", (email,)
            ).fetchone()
        return None if row is None else User(*row)

    # Resource versions

    def current_version(self, folder: str, name: str) -> Version | None:
        with self._lock:
            row = self._db.execute(
                "SELECT folder, name, version, small, key, blob_id, big_size, big_sha256,"
                " plaintext_size FROM versions WHERE folder = ? AND name = ?"
                " ORDER BY version DESC LIMIT 1",
                (folder, name),
            ).fetchone()
        return None if row is None else Version(*row)

    def version(self, folder: str, name: str, version: int) -> Version | None:
        with self._lock:
            row = self._db.execute(
                "SELECT folder, name, version, small, key, blob_id, big_size, big_sha256,"
                " plaintext_size FROM versions WHERE folder = ? AND name = ? AND version = ?",
                (folder, name, version),
            ).fetchone()
        return None if row is None else Version(*row)

    def add_version(self, upload: Upload, fields: Version, created_by: str, now: int) -> int:
        """Insert the next version of the upload's resource; return its number.

        Numbers are never reused, not even after the resource was retired: a
        device holding version N of the old one must not take a new N for it.
        """
        key = (upload.folder, upload.name)
        with self.atomic():
            (latest,) = self._db.execute(
                "SELECT MAX(COALESCE((SELECT MAX(version) FROM versions"
                " WHERE folder = ?1 AND name = ?2), 0), COALESCE((SELECT last_version"
                " FROM retired WHERE folder = ?1 AND name = ?2), 0))",
                key,
            ).fetchone()
            number = int(latest) + 1
            self._db.execute(
                "INSERT INTO versions (folder, name, version, small, key, blob_id, big_size,"
                " big_sha256, plaintext_size, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    number,
                    fields.small,
                    fields.key,
                    upload.blob_id,
                    fields.big_size,
                    fields.big_sha256,
                    fields.plaintext_size,
                    created_by,
                    now,
                ),
            )
            self._db.execute(
                "UPDATE uploads SET committed_version = ? WHERE upload_id = ?",
                (number, upload.upload_id),
            )
        return number

    def current_versions(self, folder: str, after: str, limit: int) -> list[Listed]:
        """The current version of each resource of ``folder`` named after ``after``, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, MAX(version), plaintext_size, big_size, created_at FROM versions"
                " WHERE folder = ? AND name > ? GROUP BY name ORDER BY name LIMIT ?",
                (folder, after, limit),
            ).fetchall()
        # SQLite takes the other columns of a MAX() group from the row with the max.
        return [Listed(*row) for row in rows]

    def retire(self, folder: str, name: str) -> list[str]:
        """Delete every version of a resource; return their blob ids (empty: there was none)."""
        with self.atomic():
            rows = self._db.execute(
                "SELECT version, blob_id FROM versions WHERE folder = ? AND name = ?",
                (folder, name),
            ).fetchall()
            if not rows:
                return []
            self._db.execute(
                "INSERT INTO retired VALUES (?1, ?2, ?3) ON CONFLICT (folder, name)"
                " DO UPDATE SET last_version = MAX(last_version, ?3)",
                (folder, name, max(version for version, _ in rows)),
            )
            self._db.execute("DELETE FROM versions WHERE folder = ? AND name = ?", (folder, name))
        return [blob_id for _, blob_id in rows]

    def is_committed_blob(self, blob_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM versions WHERE blob_id = ?", (blob_id,))
            return row.fetchone() is not None

    # Uploads

    def add_upload(self, upload: Upload, created_by: str) -> None:
        with self.atomic():
            self._db.execute(
                "INSERT INTO uploads (upload_id, folder, name, blob_id, created_by, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    upload.folder,
                    upload.name,
                    upload.blob_id,
                    created_by,
                    upload.expires_at,
                ),
            )

    def upload(self, upload_id: str) -> Upload | None:
        return self._one_upload("upload_id", upload_id)

    def upload_of_blob(self, blob_id: str) -> Upload | None:
        return self._one_upload("blob_id", blob_id)

    def record_put(self, blob_id: str, size: int, sha256: str, fingerprint: str) -> None:
        with self.atomic():
            self._db.execute(
                "UPDATE uploads SET put_size = ?, put_sha256 = ?, put_fingerprint = ?"
                " WHERE blob_id = ?",
                (size, sha256, fingerprint, blob_id),
            )

    def expired_uploads(self, now: int) -> list[Upload]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= ?",  # noqa: S608
                (now,),
            ).fetchall()
        return [Upload(*row) for row in rows]

    def delete_upload(self, upload_id: str) -> None:
        with self.atomic():
            self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def _one_upload(self, column: str, value: str) -> Upload | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE {column} = ?",  # noqa: S608
                (value,),
            ).fetchone()
        return None if row is None else Upload(*row)

    # Archive keys

    def archive_key(self, archive_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key FROM archive_keys WHERE archive_id = ?", (archive_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def add_archive_key(self, archive_id: str, key: bytes, created_by: str) -> bytes | None:
        """Register ``key`` unless one is there already; return the one that was there."""
        with self.atomic():
            existing = self.archive_key(archive_id)
            if existing is None:
                self._db.execute(
                    "INSERT INTO archive_keys VALUES (?, ?, ?)", (archive_id, key, created_by)
                )
        return existing


_UPLOAD_COLUMNS = (
    "upload_id, folder, name, blob_id, expires_at, put_size, put_sha256, put_fingerprint,"
    " committed_version"
)
