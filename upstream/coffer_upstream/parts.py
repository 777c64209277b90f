"""The multipart extension: presigned PUT URLs for the parts of a big part.

``POST /v1/resources/{folder}/{name}/uploads/{upload_id}/parts`` with
``{"part_number": n}`` answers ``{"url": <presigned PUT of part n>}``
(docs/upstream-protocol.md). Only an upload whose begin offered
``multipart`` has parts: it was begun on a store with a part size, which
started the store's multipart upload then (:meth:`Publisher.begin`). The
commit completes it from the store's own list of parts and verifies the
whole (:meth:`Publisher.commit`); what a client says about its parts is never
asked for nor trusted.

Checks run in the order of the other endpoints: token (401), role (403),
names (400), body (400), then the upload's state (404/409).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coffer.names import BadName, check_name
from coffer_upstream.auth import PUBLISHERS, Auth
from coffer_upstream.config import ServerConfig
from coffer_upstream.errors import bad_request, conflict
from coffer_upstream.store import Store
from coffer_upstream.uploads import Publisher
from coffer_upstream.web import answer, read_json

#: S3's part numbers.
MAX_PART_NUMBER = 10_000


class Parts:
    def __init__(
        self,
        config: ServerConfig,
        auth: Auth,
        store: Store,
        publisher: Publisher,
        now: Callable[[], int],
    ) -> None:
        self._config = config
        self._auth = auth
        self._store = store
        self._publisher = publisher
        self._now = now

    async def part_url(self, request: Request) -> Response:
        await run_in_threadpool(self._auth.authorize, request, PUBLISHERS)
        folder, name = (_name(request, param) for param in ("folder", "name"))
        body = await read_json(request, self._config.max_json_bytes, self._config.idle_timeout)
        upload_id: str = request.path_params["upload_id"]
        return await run_in_threadpool(self._part_url, folder, name, upload_id, body)

    def _part_url(self, folder: str, name: str, upload_id: str, body: dict[str, Any]) -> Response:
        number = body.get("part_number")
        # bool is an int in Python, not in JSON.
        if type(number) is not int or not 1 <= number <= MAX_PART_NUMBER:
            raise bad_request(f"field 'part_number' must be an integer from 1 to {MAX_PART_NUMBER}")
        upload = self._store.upload(upload_id)
        if upload is not None and (upload.folder, upload.name) != (folder, name):
            upload = None  # another resource's upload is unknown here, as at commit
        upload = self._publisher.check_open(upload)
        if upload.multipart_id is None:
            raise conflict("this upload has no parts: PUT the big part to its big_url")
        # Valid no longer than the upload itself.
        ttl = max(1, upload.expires_at - self._now())
        url = self._publisher.blobs.part_url(upload.blob_id, upload.multipart_id, number, ttl)
        return answer(200, {"url": url})


def _name(request: Request, param: str) -> str:
    value: str = request.path_params[param]
    try:
        check_name(value, param)
    except BadName as exc:
        raise bad_request(str(exc)) from exc
    return value
