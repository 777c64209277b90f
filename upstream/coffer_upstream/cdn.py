"""The "CDN": big parts behind presigned URLs, which need no Authorization header.

``GET``/``HEAD`` (signed for GET) stream a blob, whole or from a ``Range``,
with sendfile; ``PUT`` (signed for PUT) stores an upload's big part.
"""

from __future__ import annotations

import os
import re

from coffer_upstream.datadir import DataDir, is_blob_id
from coffer_upstream.errors import HttpError, not_found
from coffer_upstream.request import Request
from coffer_upstream.responses import FileResponse, JsonResponse
from coffer_upstream.signing import Signer
from coffer_upstream.uploads import Publisher

# One range only: "bytes=N-", "bytes=N-M" or "bytes=-N" (the last N bytes).
_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*")


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a Range header; None: the whole blob; else 416."""
    if value is None:
        return None
    unsatisfiable = HttpError(
        416, "unsatisfiable or unsupported Range", {"Content-Range": f"bytes */{size}"}
    )
    match = _RANGE.fullmatch(value)
    if match is None or match[1] == match[2] == "":
        raise unsatisfiable
    if match[1] == "":
        suffix = int(match[2])
        if suffix == 0:
            raise unsatisfiable
        start, end = max(0, size - suffix), size
    else:
        start = int(match[1])
        end = size if match[2] == "" else int(match[2]) + 1
        if end <= start:
            raise unsatisfiable
        end = min(end, size)
    if start >= size:
        raise unsatisfiable
    return start, end


class Cdn:
    def __init__(self, data: DataDir, signer: Signer, publisher: Publisher) -> None:
        self._data = data
        self._signer = signer
        self._publisher = publisher

    def get(self, request: Request, blob_id: str) -> FileResponse:
        # HEAD is a GET without the body: a GET URL allows both.
        self._signer.check_url(
            "GET", blob_id, request.query.get("expires"), request.query.get("sig")
        )
        if not is_blob_id(blob_id):
            raise not_found("no such blob")
        try:
            f = self._data.blob_path(blob_id).open("rb")
        except FileNotFoundError as exc:
            raise not_found("no such blob") from exc
        except OSError as exc:
            raise HttpError(503, "the blob cannot be read") from exc
        try:
            size = os.fstat(f.fileno()).st_size
            span = parse_range(request.headers.get("Range"), size)
        except BaseException:
            f.close()
            raise
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if span is None:
            return FileResponse(200, f, 0, size, headers)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return FileResponse(206, f, start, end - start, headers)

    def put(self, request: Request, blob_id: str) -> JsonResponse:
        self._signer.check_url(
            "PUT", blob_id, request.query.get("expires"), request.query.get("sig")
        )
        if not is_blob_id(blob_id):
            raise not_found("no such blob")
        body = request.body()
        if not body.present:
            raise HttpError(411, "a PUT needs a Content-Length or a chunked body")
        size, digest = self._publisher.receive(blob_id, body)
        return JsonResponse(201, {"size": size, "sha256": digest})
