"""The two-phase publish (begin, receive the big part, commit), retiring, the expiry sweep.

Invariants:

- A version becomes current only in :meth:`Publisher.commit`, after the stored
  big part's size and sha256 match what the commit declares; before that,
  nothing of the upload is visible to readers.
- A big part arrives in a temp file and is renamed into ``blobs/`` only when
  whole, under the store's lock, so commit never sees half a file.
- Unfinished uploads expire; the sweep removes their blobs and temp files.
- A retired resource loses all its versions and big parts at once; its
  version numbers are not given out again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coffer_upstream.bodies import Body
from coffer_upstream.datadir import DataDir, new_blob_id
from coffer_upstream.errors import HttpError, conflict, not_found
from coffer_upstream.store import Store, Upload, Version

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


class Publisher:
    def __init__(
        self, store: Store, data: DataDir, upload_ttl: int, clock: Callable[[], int]
    ) -> None:
        self._store = store
        self._data = data
        self._ttl = upload_ttl
        self._clock = clock

    def begin(self, folder: str, name: str, user: str) -> Upload:
        upload = Upload(
            upload_id=secrets.token_hex(16),
            folder=folder,
            name=name,
            blob_id=new_blob_id(),
            expires_at=self._clock() + self._ttl,
            put_size=None,
            put_sha256=None,
            put_fingerprint=None,
            committed_version=None,
        )
        self._store.add_upload(upload, user)
        return upload

    def receive(self, blob_id: str, body: Body) -> tuple[int, str]:
        """Store the PUT body as the upload's big part; return its size and sha256."""
        self._check_open(self._store.upload_of_blob(blob_id))
        temp = self._data.temp_path(blob_id)
        try:
            size, digest = _write(temp, body)
            with self._store.atomic():
                # Checked again: the upload may have expired or been committed meanwhile.
                self._check_open(self._store.upload_of_blob(blob_id))
                target = self._data.blob_path(blob_id)
                with _disk_errors():
                    os.replace(temp, target)
                    fingerprint = _fingerprint(target)
                self._store.record_put(blob_id, size, digest, fingerprint)
        finally:
            temp.unlink(missing_ok=True)
        return size, digest

    def commit(self, upload_id: str, folder: str, name: str, fields: Version, user: str) -> int:
        """Make the upload the resource's next version; return its number."""
        with self._store.atomic():
            now = self._clock()
            upload = self._store.upload(upload_id)
            if (
                upload is None
                or (upload.folder, upload.name) != (folder, name)
                or (upload.committed_version is None and upload.expires_at <= now)
            ):
                raise not_found("unknown or expired upload")
            if upload.committed_version is not None:
                # A retried commit (its answer was lost) gets the same answer.
                done = self._store.version(folder, name, upload.committed_version)
                if done is not None and _same_content(done, fields):
                    return done.version
                raise conflict("upload already committed with other content")
            size, digest = self._stored_part(upload)
            if size != fields.big_size:
                raise conflict(f"big part has {size} bytes, the commit says {fields.big_size}")
            if digest != fields.big_sha256:
                raise conflict("big part sha256 does not match the commit")
            return self._store.add_version(upload, fields, user, now)

    def retire(self, folder: str, name: str) -> int:
        """Delete every version of a resource and its big parts; return how many versions."""
        blob_ids = self._store.retire(folder, name)
        # After the commit: a reader sees the resource whole or not at all. A
        # download already under way keeps its open file.
        for blob_id in blob_ids:
            with _disk_errors():
                self._data.remove_blob(blob_id)
        return len(blob_ids)

    def sweep(self) -> int:
        """Forget expired uploads; remove the blobs of those never committed."""
        count = 0
        with self._store.atomic():
            for upload in self._store.expired_uploads(self._clock()):
                if upload.committed_version is None:
                    self._data.remove_blob(upload.blob_id)
                    count += 1
                else:
                    for temp in self._data.temp_paths(upload.blob_id):
                        temp.unlink(missing_ok=True)
                self._store.delete_upload(upload.upload_id)
        if count:
            log.info("removed %d expired upload(s)", count)
        return count

    def _check_open(self, upload: Upload | None) -> None:
        expired = upload is not None and upload.expires_at <= self._clock()
        if upload is None or (upload.committed_version is None and expired):
            raise not_found("unknown or expired upload")
        if upload.committed_version is not None:
            raise conflict("the big part of a committed upload cannot change")

    def _stored_part(self, upload: Upload) -> tuple[int, str]:
        path = self._data.blob_path(upload.blob_id)
        try:
            fingerprint = _fingerprint(path)
        except FileNotFoundError as exc:
            raise conflict("big part not uploaded") from exc
        if fingerprint == upload.put_fingerprint and upload.put_sha256 is not None:
            assert upload.put_size is not None
            return upload.put_size, upload.put_sha256
        # Changed on disk since its PUT: what counts is what is there now.
        with _disk_errors(), path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            return os.fstat(f.fileno()).st_size, digest


def _write(temp: Path, body: Body) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with _disk_errors():
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Errors reading the body are the client's (its connection); writing, the disk's.
        while n := body.readinto(view):
            sha.update(view[:n])
            with _disk_errors():
                written = 0
                while written < n:
                    written += os.write(fd, view[written:n])
            size += n
        with _disk_errors():
            # On disk before it can become part of a version.
            os.fsync(fd)
    finally:
        os.close(fd)
    return size, sha.hexdigest()


@contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        log.warning("big part storage failed: %s", exc.strerror)
        status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503
        raise HttpError(status, "the big part storage failed") from exc


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _same_content(a: Version, b: Version) -> bool:
    return (a.small, a.key, a.big_size, a.big_sha256, a.plaintext_size) == (
        b.small,
        b.key,
        b.big_size,
        b.big_sha256,
        b.plaintext_size,
    )
