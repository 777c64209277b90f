"""Resource versions, uploads and archive keys in the database.

Every method is one transaction, or joins the one :meth:`Store.atomic`
opened on this thread, so the publisher can group steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from coffer_upstream.db.models import ArchiveKey, Retired
from coffer_upstream.db.models import Upload as UploadRow
from coffer_upstream.db.models import Version as VersionRow
from coffer_upstream.db.session import Transactions

_VERSION_COLUMNS = (
    VersionRow.folder,
    VersionRow.name,
    VersionRow.version,
    VersionRow.small,
    VersionRow.key,
    VersionRow.blob_id,
    VersionRow.big_size,
    VersionRow.big_sha256,
    VersionRow.plaintext_size,
    VersionRow.segment_size,
)
_UPLOAD_COLUMNS = (
    UploadRow.upload_id,
    UploadRow.folder,
    UploadRow.name,
    UploadRow.blob_id,
    UploadRow.expires_at,
    UploadRow.put_size,
    UploadRow.put_sha256,
    UploadRow.committed_version,
    UploadRow.multipart_id,
)


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
    #: The chunk size of the segment manifest, None if the publisher gave none.
    segment_size: int | None = None
    #: The manifest itself: only in a commit's fields (it may be megabytes, so
    #: reads leave it out: :meth:`Store.segments`).
    segments: bytes | None = None


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
    committed_version: int | None
    multipart_id: str | None = None


class VersionTaken(Exception):
    """Another replica committed the same version number first: try again."""


class Store:
    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def atomic(self) -> AbstractContextManager[Connection]:
        return self._tx.atomic()

    # Resource versions

    def current_version(self, folder: str, name: str) -> Version | None:
        query = (
            select(*_VERSION_COLUMNS)
            .where(VersionRow.folder == folder, VersionRow.name == name)
            .order_by(VersionRow.version.desc())
            .limit(1)
        )
        with self._tx.read() as db:
            row = db.execute(query).first()
        return None if row is None else Version(*row)

    def version(self, folder: str, name: str, version: int) -> Version | None:
        query = select(*_VERSION_COLUMNS).where(
            VersionRow.folder == folder, VersionRow.name == name, VersionRow.version == version
        )
        with self._tx.read() as db:
            row = db.execute(query).first()
        return None if row is None else Version(*row)

    def segments(self, folder: str, name: str, version: int) -> bytes | None:
        """The segment manifest of a version; None if it has none (or no such version)."""
        query = select(VersionRow.segments).where(
            VersionRow.folder == folder, VersionRow.name == name, VersionRow.version == version
        )
        with self._tx.read() as db:
            manifest = db.execute(query).scalar()
        return None if manifest is None else bytes(manifest)

    def add_version(self, upload: Upload, fields: Version, created_by: str, now: int) -> int:
        """Insert the next version of the upload's resource; return its number.

        Numbers are never reused, not even after the resource was retired: a
        device holding version N of the old one must not take a new N for it.
        Two replicas committing at once: one gets :class:`VersionTaken`.
        """
        where = (upload.folder, upload.name)
        with self.atomic() as db:
            latest = db.execute(
                select(func.max(VersionRow.version)).where(
                    VersionRow.folder == where[0], VersionRow.name == where[1]
                )
            ).scalar()
            retired = db.execute(
                select(Retired.last_version).where(
                    Retired.folder == where[0], Retired.name == where[1]
                )
            ).scalar()
            number = max(latest or 0, retired or 0) + 1
            try:
                with db.begin_nested():
                    db.execute(
                        insert(VersionRow).values(
                            folder=upload.folder,
                            name=upload.name,
                            version=number,
                            small=fields.small,
                            key=fields.key,
                            blob_id=upload.blob_id,
                            big_size=fields.big_size,
                            big_sha256=fields.big_sha256,
                            plaintext_size=fields.plaintext_size,
                            segment_size=fields.segment_size,
                            segments=fields.segments,
                            created_by=created_by,
                            created_at=now,
                        )
                    )
            except IntegrityError as exc:
                raise VersionTaken from exc
            db.execute(
                update(UploadRow)
                .where(UploadRow.upload_id == upload.upload_id)
                .values(committed_version=number)
            )
        return number

    def current_versions(self, folder: str, after: str, limit: int) -> list[Listed]:
        """The current version of each resource of ``folder`` named after ``after``, by name."""
        newest = (
            select(VersionRow.name, func.max(VersionRow.version).label("version"))
            .where(VersionRow.folder == folder, VersionRow.name > after)
            .group_by(VersionRow.name)
            .subquery()
        )
        query = (
            select(
                VersionRow.name,
                VersionRow.version,
                VersionRow.plaintext_size,
                VersionRow.big_size,
                VersionRow.created_at,
            )
            .join(
                newest,
                (VersionRow.name == newest.c.name) & (VersionRow.version == newest.c.version),
            )
            .where(VersionRow.folder == folder)
            .order_by(VersionRow.name)
            .limit(limit)
        )
        with self._tx.read() as db:
            return [Listed(*row) for row in db.execute(query)]

    def resources(self, folder: str | None) -> Iterator[tuple[str, str, int, int]]:
        """(folder, name, version, big_size) of every version, for the admin's listing."""
        query = select(
            VersionRow.folder, VersionRow.name, VersionRow.version, VersionRow.big_size
        ).order_by(VersionRow.folder, VersionRow.name, VersionRow.version)
        if folder is not None:
            query = query.where(VersionRow.folder == folder)
        with self._tx.read() as db:
            yield from (tuple(row) for row in db.execute(query))  # type: ignore[misc]

    def retire(self, folder: str, name: str, version: int | None = None) -> list[str]:
        """Delete the versions of a resource (all, or one); return their blob ids."""
        where = [VersionRow.folder == folder, VersionRow.name == name]
        if version is not None:
            where.append(VersionRow.version == version)
        with self.atomic() as db:
            rows = db.execute(select(VersionRow.version, VersionRow.blob_id).where(*where)).all()
            if not rows:
                return []
            last = max(number for number, _ in rows)
            known = db.execute(
                select(Retired.last_version).where(Retired.folder == folder, Retired.name == name)
            ).scalar()
            if known is None:
                db.execute(insert(Retired).values(folder=folder, name=name, last_version=last))
            elif known < last:
                db.execute(
                    update(Retired)
                    .where(Retired.folder == folder, Retired.name == name)
                    .values(last_version=last)
                )
            db.execute(delete(VersionRow).where(*where))
        return [blob_id for _, blob_id in rows]

    # Uploads

    def add_upload(self, upload: Upload, created_by: str) -> None:
        with self.atomic() as db:
            db.execute(
                insert(UploadRow).values(
                    upload_id=upload.upload_id,
                    folder=upload.folder,
                    name=upload.name,
                    blob_id=upload.blob_id,
                    created_by=created_by,
                    expires_at=upload.expires_at,
                    multipart_id=upload.multipart_id,
                )
            )

    def upload(self, upload_id: str, lock: bool = False) -> Upload | None:
        """The upload; with ``lock`` (inside :meth:`atomic`), held until the transaction ends."""
        query = select(*_UPLOAD_COLUMNS).where(UploadRow.upload_id == upload_id)
        if lock:
            query = query.with_for_update()
        with self._tx.read() as db:
            row = db.execute(query).first()
        return None if row is None else Upload(*row)

    def upload_of_blob(self, blob_id: str) -> Upload | None:
        query = select(*_UPLOAD_COLUMNS).where(UploadRow.blob_id == blob_id)
        with self._tx.read() as db:
            row = db.execute(query).first()
        return None if row is None else Upload(*row)

    def expired_uploads(self, now: int, limit: int = 1000) -> list[Upload]:
        query = select(*_UPLOAD_COLUMNS).where(UploadRow.expires_at <= now).limit(limit)
        with self._tx.read() as db:
            return [Upload(*row) for row in db.execute(query)]

    def delete_upload(self, upload_id: str) -> None:
        with self.atomic() as db:
            db.execute(delete(UploadRow).where(UploadRow.upload_id == upload_id))

    # Archive keys

    def archive_key(self, archive_id: str) -> bytes | None:
        query = select(ArchiveKey.key).where(ArchiveKey.archive_id == archive_id)
        with self._tx.read() as db:
            key = db.execute(query).scalar()
        return None if key is None else bytes(key)

    def add_archive_key(self, archive_id: str, key: bytes, created_by: str) -> bytes | None:
        """Register ``key`` unless one is there already; return the one that was there."""
        with self.atomic() as db:
            existing = self.archive_key(archive_id)
            if existing is None:
                try:
                    with db.begin_nested():
                        db.execute(
                            insert(ArchiveKey).values(
                                archive_id=archive_id, key=key, created_by=created_by
                            )
                        )
                except IntegrityError:
                    # Another replica registered one meanwhile.
                    return self.archive_key(archive_id)
        return existing
