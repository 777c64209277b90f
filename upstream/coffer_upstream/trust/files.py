"""The metadata files in the database, one row per (role, version), as served.

Every write that makes a new version of a role runs inside :meth:`Files.locked`:
one transaction holding the repository's lock (PostgreSQL: a transaction-level
advisory lock; SQLite: ``BEGIN IMMEDIATE`` already admits one writer), so two
replicas never read the same "current" and both take the next number. The
primary key (role, version) refuses a duplicate anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, text

from coffer_upstream.db.models import TufMetadata
from coffer_upstream.db.session import Transactions

#: The roles the repository itself keeps; any other name is a delegated role.
TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
#: The key of PostgreSQL's advisory lock for the repository (any constant of our own).
_LOCK_KEY = 0x636F666665720014  # "coffer" and issue 20


@dataclass(frozen=True)
class File:
    role: str
    version: int
    data: bytes
    #: ``signed.expires``, Unix seconds.
    expires: int


class Files:
    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """A write transaction holding the repository's lock until it ends."""
        with self._tx.atomic() as db:
            if db.dialect.name == "postgresql":
                db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield db

    def get(self, role: str, version: int) -> bytes | None:
        query = select(TufMetadata.data).where(
            TufMetadata.role == role, TufMetadata.version == version
        )
        with self._tx.read() as db:
            data = db.execute(query).scalar()
        return None if data is None else bytes(data)

    def latest(self, role: str) -> File | None:
        """The role's highest version (read in the transaction under way, if any)."""
        query = (
            select(TufMetadata.role, TufMetadata.version, TufMetadata.data, TufMetadata.expires)
            .where(TufMetadata.role == role)
            .order_by(TufMetadata.version.desc())
            .limit(1)
        )
        with self._tx.read() as db:
            row = db.execute(query).first()
        return None if row is None else File(row.role, row.version, bytes(row.data), row.expires)

    def delegated(self) -> list[File]:
        """The highest version of every delegated role stored, by name."""
        newest = (
            select(TufMetadata.role, func.max(TufMetadata.version).label("version"))
            .where(TufMetadata.role.not_in(TOP_LEVEL))
            .group_by(TufMetadata.role)
            .subquery()
        )
        query = (
            select(TufMetadata.role, TufMetadata.version, TufMetadata.data, TufMetadata.expires)
            .join(
                newest,
                (TufMetadata.role == newest.c.role) & (TufMetadata.version == newest.c.version),
            )
            .order_by(TufMetadata.role)
        )
        with self._tx.read() as db:
            return [File(r.role, r.version, bytes(r.data), r.expires) for r in db.execute(query)]

    def add(self, db: Connection, file: File) -> None:
        db.execute(
            insert(TufMetadata).values(
                role=file.role, version=file.version, data=file.data, expires=file.expires
            )
        )
