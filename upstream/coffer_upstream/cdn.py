"""The local store's "CDN": big parts behind presigned URLs, which need no Authorization.

``GET``/``HEAD`` (signed for GET) serve a blob, whole or a ``Range`` of it,
with Starlette's :class:`FileResponse`; ``PUT`` (signed for PUT) streams the
body into a temp file, then installs it under the upload's lock.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Message, Receive, Scope, Send

from coffer_upstream.blobstore import is_blob_id
from coffer_upstream.blobstore.local import Incoming, LocalStore
from coffer_upstream.errors import HttpError, bad_request, not_found
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store
from coffer_upstream.uploads import Publisher
from coffer_upstream.web import answer, body_chunks

log = logging.getLogger(__name__)


class BlobResponse(FileResponse):
    """A FileResponse over a blob already open, whose client must keep reading.

    The blob is opened before the headers go out and served through its
    descriptor (``/proc/self/fd/N`` names the open file, not the path), so a
    blob deleted in between (a DELETE of the resource, the janitor) is still
    served whole to a request that found it, never cut after a 200.
    Stalled ``idle`` seconds, the client is dropped: uvicorn waits on a client
    that stopped reading for ever; this does not.
    """

    # Fewer, larger reads than the default 64 KiB: each is a trip to a thread.
    chunk_size = 1024 * 1024

    def __init__(self, fd: int, idle: float) -> None:
        st = os.fstat(fd)
        super().__init__(
            f"/proc/self/fd/{fd}",
            media_type="application/octet-stream",
            stat_result=st,
            headers={"Accept-Ranges": "bytes"},
        )
        self._fd = fd
        self._idle = idle
        self.size = st.st_size

    @classmethod
    def open(cls, path: Path, idle: float) -> BlobResponse:
        """The response for the blob at ``path`` (FileNotFoundError if there is none)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(fd, idle)
        except BaseException:
            os.close(fd)
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            with anyio.fail_after(self._idle):
                await send(message)

        try:
            await super().__call__(scope, receive, timed)
        except TimeoutError:
            # Unfinished: uvicorn closes the connection; the access log shows how far.
            log.info("dropped a client that stopped reading")
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the blob (done by the response itself once sent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Cdn:
    def __init__(
        self,
        blobs: LocalStore,
        signer: Signer,
        store: Store,
        publisher: Publisher,
        idle: float,
    ) -> None:
        self._blobs = blobs
        self._signer = signer
        self._store = store
        self._publisher = publisher
        self._idle = idle

    def _blob_id(self, request: Request, method: str) -> str:
        blob_id: str = request.path_params["blob_id"]
        query = request.query_params
        # HEAD is a GET without the body: a GET URL allows both.
        self._signer.check_url(method, blob_id, query.get("expires"), query.get("sig"))
        if not is_blob_id(blob_id):
            raise not_found("no such blob")
        return blob_id

    async def get(self, request: Request) -> Response:
        blob_id = self._blob_id(request, "GET")
        try:
            response = await run_in_threadpool(
                BlobResponse.open, self._blobs.path(blob_id), self._idle
            )
        except FileNotFoundError as exc:
            raise not_found("no such blob") from exc
        size = response.size
        value = request.headers.get("range")
        if value is not None:
            # Checked here so that a bad Range is answered in the protocol's shape.
            try:
                BlobResponse._parse_range_header(value, size)
            except (MalformedRangeHeader, RangeNotSatisfiable) as exc:
                response.close()
                what = "unsupported" if isinstance(exc, MalformedRangeHeader) else "unsatisfiable"
                raise HttpError(416, f"{what} Range", {"Content-Range": f"bytes */{size}"}) from exc
        return response

    async def put(self, request: Request) -> Response:
        blob_id = self._blob_id(request, "PUT")
        if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
            raise HttpError(411, "a PUT needs a Content-Length or a chunked body")
        upload = await run_in_threadpool(self._store.upload_of_blob, blob_id)
        self._publisher.check_open(upload)
        try:
            incoming = await self._blobs.receive(blob_id, body_chunks(request, self._idle))
        except ClientDisconnect as exc:
            raise bad_request("the request body ended early") from exc
        try:
            await run_in_threadpool(self._install, incoming)
        finally:
            self._blobs.discard(incoming)
        stored = incoming.stored
        return answer(201, {"size": stored.size, "sha256": stored.sha256})

    def _install(self, incoming: Incoming) -> None:
        with self._store.atomic():
            # Checked again, under the lock: it may have expired or been committed meanwhile.
            upload = self._store.upload_of_blob(incoming.blob_id)
            if upload is not None:
                upload = self._store.upload(upload.upload_id, lock=True)
            self._publisher.check_open(upload)
            self._blobs.install(incoming)
