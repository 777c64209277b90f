"""The two-phase publish (begin, the big part goes to the store, commit), retiring, the sweep.

Invariants:

- A version becomes current only in :meth:`Publisher.commit`, after the big
  part as the store holds it now (``stat``, never what a client said) has the
  size and sha256 the commit declares; before that, nothing of the upload is
  visible to readers.
- The upload's row is locked while it is committed, and while a PUT to the
  local store is installed: the bytes a commit verified are the bytes kept.
- Unfinished uploads expire; the sweep deletes their blobs. Any replica may
  begin an upload and any other commit it: the state is in the database.
- A retired resource loses its versions and big parts at once; its version
  numbers are not given out again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from coffer_upstream.blobstore import BlobStore, new_blob_id
from coffer_upstream.errors import conflict, not_found
from coffer_upstream.store import Store, Upload, Version, VersionTaken

log = logging.getLogger(__name__)

#: Commits racing for the same resource on several replicas: tries before 503.
_COMMIT_TRIES = 5


class Publisher:
    def __init__(
        self, store: Store, blobs: BlobStore, upload_ttl: int, clock: Callable[[], int]
    ) -> None:
        self._store = store
        self.blobs = blobs
        self._ttl = upload_ttl
        self._clock = clock

    def begin(self, folder: str, name: str, user: str) -> Upload:
        blob_id = new_blob_id()
        # A store with parts gets its multipart upload now, once, so that part
        # URLs asked for at once (on any replica) all belong to the same one.
        multipart_id = None
        if self.blobs.part_size is not None:
            multipart_id = self.blobs.start_multipart(blob_id)
        upload = Upload(
            upload_id=secrets.token_hex(16),
            folder=folder,
            name=name,
            blob_id=blob_id,
            expires_at=self._clock() + self._ttl,
            put_size=None,
            put_sha256=None,
            committed_version=None,
            multipart_id=multipart_id,
        )
        self._store.add_upload(upload, user)
        return upload

    def check_open(self, upload: Upload | None) -> Upload:
        """The upload if a big part may still be sent to it; else 404 or 409."""
        expired = upload is not None and upload.expires_at <= self._clock()
        if upload is None or (upload.committed_version is None and expired):
            raise not_found("unknown or expired upload")
        if upload.committed_version is not None:
            raise conflict("the big part of a committed upload cannot change")
        return upload

    def commit(self, upload_id: str, folder: str, name: str, fields: Version, user: str) -> int:
        """Make the upload the resource's next version; return its number."""
        for _ in range(_COMMIT_TRIES - 1):
            try:
                return self._commit(upload_id, folder, name, fields, user)
            except VersionTaken:
                continue
        return self._commit(upload_id, folder, name, fields, user)

    def _commit(self, upload_id: str, folder: str, name: str, fields: Version, user: str) -> int:
        with self._store.atomic():
            now = self._clock()
            upload = self._store.upload(upload_id, lock=True)
            if (
                upload is None
                or (upload.folder, upload.name) != (folder, name)
                or (upload.committed_version is None and upload.expires_at <= now)
            ):
                raise not_found("unknown or expired upload")
            if upload.committed_version is not None:
                # A retried commit (its answer was lost) gets the same answer.
                done = self._store.version(folder, name, upload.committed_version)
                if done is not None and _same_content(
                    done, self._store.segments(folder, name, done.version), fields
                ):
                    return done.version
                raise conflict("upload already committed with other content")
            if upload.multipart_id is not None:
                self.blobs.finish_multipart(upload.blob_id, upload.multipart_id)
            stored = self.blobs.stat(upload.blob_id)
            if stored is None:
                raise conflict("big part not uploaded")
            if stored.size != fields.big_size:
                raise conflict(
                    f"big part has {stored.size} bytes, the commit says {fields.big_size}"
                )
            if stored.sha256 != fields.big_sha256:
                raise conflict("big part sha256 does not match the commit")
            return self._store.add_version(upload, fields, user, now)

    def retire(self, folder: str, name: str, version: int | None = None) -> int:
        """Delete the versions of a resource (all, or one) and their big parts; how many."""
        blob_ids = self._store.retire(folder, name, version)
        # After the commit: a reader sees the resource whole or not at all.
        for blob_id in blob_ids:
            self.blobs.delete(blob_id)
        return len(blob_ids)

    def sweep(self) -> int:
        """Forget expired uploads; delete the blobs of those never committed."""
        count = 0
        for upload in self._store.expired_uploads(self._clock()):
            if upload.committed_version is None:
                if upload.multipart_id is not None:
                    self.blobs.abort_multipart(upload.blob_id, upload.multipart_id)
                self.blobs.delete(upload.blob_id)
                count += 1
            self._store.delete_upload(upload.upload_id)
        if count:
            log.info("removed %d expired upload(s)", count)
        return count


def _same_content(a: Version, a_segments: bytes | None, b: Version) -> bool:
    """Whether a retried commit (``b``) says what committed version ``a`` holds."""
    return (
        a.small,
        a.key,
        a.big_size,
        a.big_sha256,
        a.plaintext_size,
        a.segment_size,
        a_segments,
    ) == (
        b.small,
        b.key,
        b.big_size,
        b.big_sha256,
        b.plaintext_size,
        b.segment_size,
        b.segments,
    )
