"""The local store: big parts as files in a directory, served by the app's ``/cdn`` routes.

Layout under the data dir::

    blobs/<blob_id>              a big part, whole (renamed in only when whole)
    digests/<blob_id>            "<fingerprint> <sha256>" computed while it arrived
    tmp/<blob_id>.<random>.part  a PUT in flight

URLs are ``{base}/cdn/{blob_id}?expires=...&sig=...``, signed by :class:`Signer`
for one method. :meth:`LocalStore.stat` trusts the digest file only while the
blob's fingerprint (size, mtime, inode) is the one it was computed for;
otherwise it hashes the file again: what counts is what is on disk now.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffer_upstream.blobstore import Stored, StoreFull, StoreUnavailable, is_blob_id
from coffer_upstream.signing import Signer

#: Writes are gathered into buffers of this size: fewer system calls.
_WRITE_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    """A PUT body received whole into a temp file, not yet the blob."""

    blob_id: str
    temp: Path
    stored: Stored


class LocalStore:
    part_size: int | None = None

    def __init__(self, root: Path, signer: Signer, base_url: Callable[[], str]) -> None:
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.digests = root / "digests"
        self._signer = signer
        self._base_url = base_url
        with _errors():
            for path in (root, self.blobs, self.tmp, self.digests):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)

    # URLs

    def get_url(self, blob_id: str, ttl: int) -> str:
        return self._url("GET", blob_id, ttl)

    def put_url(self, blob_id: str, ttl: int) -> str:
        return self._url("PUT", blob_id, ttl)

    def _url(self, method: str, blob_id: str, ttl: int) -> str:
        query = self._signer.url_query(method, blob_id, ttl)
        return f"{self._base_url().rstrip('/')}/cdn/{blob_id}?{query}"

    # Multipart: not offered (part_size is None); a single PUT of any size.

    def start_multipart(self, blob_id: str) -> str:
        raise NotImplementedError("the local store has no multipart uploads")

    def part_url(self, blob_id: str, multipart_id: str, part_number: int, ttl: int) -> str:
        raise NotImplementedError("the local store has no multipart uploads")

    def finish_multipart(self, blob_id: str, multipart_id: str) -> None:
        raise NotImplementedError("the local store has no multipart uploads")

    def abort_multipart(self, blob_id: str, multipart_id: str) -> None:
        pass

    # Contents

    def path(self, blob_id: str) -> Path:
        if not is_blob_id(blob_id):
            raise ValueError("not a blob id")
        return self.blobs / blob_id

    async def receive(self, blob_id: str, chunks: AsyncIterable[bytes]) -> Incoming:
        """Write ``chunks`` to a temp file, on disk; :meth:`install` or :meth:`discard` it.

        An error reading ``chunks`` (the client's) propagates as is and leaves
        nothing behind; a disk error is :class:`StoreFull` or :class:`StoreUnavailable`.
        """
        temp = self.tmp / f"{self.path(blob_id).name}.{secrets.token_hex(8)}.part"
        sha = hashlib.sha256()
        size = 0
        with _errors():
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        loop = asyncio.get_running_loop()
        # Double buffering: a thread hashes and writes one buffer while the
        # event loop gathers the next (hashlib and write release the GIL).
        writing: asyncio.Future[None] | None = None
        try:
            pending = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                pending += chunk
                if len(pending) >= _WRITE_BUFFER:
                    if writing is not None:
                        await writing
                    full, pending = pending, bytearray()
                    writing = loop.run_in_executor(None, _absorb, fd, sha, full)
            if writing is not None:
                await writing
                writing = None
            _absorb(fd, sha, pending)
            with _errors():
                # On disk before it can become part of a version.
                await loop.run_in_executor(None, os.fsync, fd)
        except BaseException:
            if writing is not None:
                # The thread must be done with the file before it is closed.
                await asyncio.shield(asyncio.wait([writing]))
            temp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return Incoming(blob_id, temp, Stored(size, sha.hexdigest()))

    def install(self, incoming: Incoming) -> None:
        """Make a received blob the blob (replacing any), whole at once."""
        target = self.path(incoming.blob_id)
        try:
            with _errors():
                os.replace(incoming.temp, target)
                self._write_digest(incoming.blob_id, _fingerprint(target), incoming.stored.sha256)
        finally:
            incoming.temp.unlink(missing_ok=True)

    def discard(self, incoming: Incoming) -> None:
        incoming.temp.unlink(missing_ok=True)

    def stat(self, blob_id: str) -> Stored | None:
        path = self.path(blob_id)
        with _errors():
            try:
                fingerprint = _fingerprint(path)
            except FileNotFoundError:
                return None
            known = self._read_digest(blob_id)
            if known is not None and known[0] == fingerprint:
                return Stored(int(fingerprint.split(":")[0]), known[1])
            # Changed on disk since it arrived (or never recorded): hash it again.
            try:
                with path.open("rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                    return Stored(os.fstat(f.fileno()).st_size, digest)
            except FileNotFoundError:
                return None

    def delete(self, blob_id: str) -> None:
        with _errors():
            for path in (self.path(blob_id), self.digests / blob_id, *self.temp_paths(blob_id)):
                path.unlink(missing_ok=True)

    def temp_paths(self, blob_id: str | None = None) -> Iterator[Path]:
        """Temp files of PUTs in flight (for one blob, or all)."""
        pattern = "*.part" if blob_id is None else f"{blob_id}.*.part"
        return self.tmp.glob(pattern)

    def remove_debris(self, idle: float, now: float) -> int:
        """Remove temp files untouched for ``idle`` seconds: PUTs that died. How many."""
        count = 0
        for temp in self.temp_paths():
            try:
                if temp.stat().st_mtime < now - idle:
                    temp.unlink(missing_ok=True)
                    count += 1
            except FileNotFoundError:
                pass
        return count

    def close(self) -> None:
        pass

    def _write_digest(self, blob_id: str, fingerprint: str, digest: str) -> None:
        path = self.digests / blob_id
        temp = path.with_name(f".{blob_id}.{secrets.token_hex(4)}")
        temp.write_text(f"{fingerprint} {digest}\n")
        os.replace(temp, path)

    def _read_digest(self, blob_id: str) -> tuple[str, str] | None:
        try:
            fingerprint, _, digest = (self.digests / blob_id).read_text().strip().partition(" ")
        except FileNotFoundError:
            return None
        return fingerprint, digest


def _absorb(fd: int, sha: Any, data: bytearray) -> None:
    sha.update(data)
    _write_all(fd, data)


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    with _errors():
        while view:
            view = view[os.write(fd, view) :]


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull("the big part storage is full") from exc
        raise StoreUnavailable(f"the big part storage failed: {exc.strerror}") from exc
