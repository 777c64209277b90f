"""The ``/v1`` endpoints of the resource API (login and tokens in ``auth``), and ``/health``.

Checks run in this order, so answers are predictable: the bearer token (401),
the role (403), the names in the path (400), the body (400/413), then the
state (404/409). Database steps run in the server's thread pool, never on
the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coffer.names import BadName, check_name
from coffer_upstream.auth import PUBLISHERS, READERS, Auth
from coffer_upstream.config import ServerConfig
from coffer_upstream.errors import bad_request, conflict, not_found
from coffer_upstream.fields import field_base64, field_int, field_sha256
from coffer_upstream.leases import LeaseIssuer, b64url
from coffer_upstream.store import Store, Version
from coffer_upstream.uploads import Publisher
from coffer_upstream.web import answer, read_json

KEY_BYTES = 32
#: One raw SHA-256 per chunk of the big part, in a segment manifest.
SEGMENT_DIGEST_BYTES = 32
MAX_VERSION = 2**63 - 1
#: Items of a folder listing when the query names no ``limit``, and the most it may name.
LIST_DEFAULT = 100
LIST_MAX = 1000


class Api:
    def __init__(
        self,
        config: ServerConfig,
        auth: Auth,
        store: Store,
        publisher: Publisher,
        leases: LeaseIssuer,
        now: Callable[[], int],
    ) -> None:
        self._config = config
        self._auth = auth
        self._store = store
        self._publisher = publisher
        self._leases = leases
        self._now = now

    async def health(self, request: Request) -> Response:
        return answer(200, {"status": "ok"})

    async def list_resources(self, request: Request) -> Response:
        return await run_in_threadpool(self._list_resources, request)

    def _list_resources(self, request: Request) -> Response:
        self._auth.authorize(request, READERS)
        folder = _names(request, "folder")[0]
        limit = _limit(request.query_params.get("limit"))
        after = _cursor_name(request.query_params.get("cursor"))
        # One more than asked says whether there is a next page.
        found = self._store.current_versions(folder, after, limit + 1)
        page = found[:limit]
        more = len(found) > limit
        items = [
            {
                "name": item.name,
                "version": item.version,
                "plaintext_size": item.plaintext_size,
                "big_size": item.big_size,
                "updated_at": item.updated_at,
            }
            for item in page
        ]
        cursor = b64url(page[-1].name.encode("ascii")) if more else None
        return answer(200, {"items": items, "next_cursor": cursor})

    async def get_resource(self, request: Request) -> Response:
        return await run_in_threadpool(self._get_resource, request)

    def _get_resource(self, request: Request) -> Response:
        caller = self._auth.caller(request, READERS)
        folder, name = _names(request, "folder", "name")
        asked = request.query_params.get("version")
        if asked is None:
            version = self._store.current_version(folder, name)
        else:
            version = self._store.version(folder, name, _version_number(asked))
        if version is None:
            which = "" if asked is None else f" version {asked}"
            raise not_found(f"no resource {folder}/{name}{which}")
        lease = self._leases.issue(version, caller.subject, self._now(), caller.device_id)
        body = {
            "folder": version.folder,
            "name": version.name,
            "version": version.version,
            "small": _b64(version.small),
            "key": _b64(version.key),
            "big_url": self._publisher.blobs.get_url(version.blob_id, self._config.url_ttl),
            "big_size": version.big_size,
            "big_sha256": version.big_sha256,
            "plaintext_size": version.plaintext_size,
            "lease": lease,
        }
        if version.segment_size is not None:
            # The manifest itself is at .../versions/{N}/segments: it can be megabytes.
            body["segment_size"] = version.segment_size
        return answer(200, body, {"Cache-Control": "no-store"})

    async def get_segments(self, request: Request) -> Response:
        return await run_in_threadpool(self._get_segments, request)

    def _get_segments(self, request: Request) -> Response:
        self._auth.authorize(request, READERS)
        folder, name = _names(request, "folder", "name")
        number = _version_number(request.path_params["version"])
        manifest = self._store.segments(folder, name, number)
        if manifest is None:
            raise not_found(f"no segment manifest for {folder}/{name} version {number}")
        return Response(manifest, 200, media_type="application/octet-stream")

    async def delete_resource(self, request: Request) -> Response:
        return await run_in_threadpool(self._delete_resource, request)

    def _delete_resource(self, request: Request) -> Response:
        self._auth.authorize(request, PUBLISHERS)
        folder, name = _names(request, "folder", "name")
        deleted = self._publisher.retire(folder, name)
        if not deleted:
            raise not_found(f"no resource {folder}/{name}")
        return answer(200, {"folder": folder, "name": name, "deleted_versions": deleted})

    async def begin_upload(self, request: Request) -> Response:
        user = await run_in_threadpool(self._auth.authorize, request, PUBLISHERS)
        folder, name = _names(request, "folder", "name")
        # No fields yet; unknown ones are ignored.
        await read_json(
            request, self._config.max_json_bytes, self._config.idle_timeout, empty_is_object=True
        )
        return await run_in_threadpool(self._begin_upload, user, folder, name)

    def _begin_upload(self, user: str, folder: str, name: str) -> Response:
        upload = self._publisher.begin(folder, name, user)
        ttl = self._config.upload_ttl
        body: dict[str, object] = {
            "upload_id": upload.upload_id,
            "big_url": self._publisher.blobs.put_url(upload.blob_id, ttl),
            "expires_in": ttl,
        }
        if upload.multipart_id is not None:
            # The multipart extension (coffer_upstream.parts).
            body["multipart"] = {"part_size": self._publisher.blobs.part_size}
        return answer(201, body)

    async def commit_upload(self, request: Request) -> Response:
        user = await run_in_threadpool(self._auth.authorize, request, PUBLISHERS)
        _names(request, "folder", "name")
        # Larger than other bodies: it may carry a segment manifest.
        body = await read_json(request, self._config.max_commit_bytes, self._config.idle_timeout)
        return await run_in_threadpool(self._commit_upload, request, user, body)

    def _commit_upload(self, request: Request, user: str, body: dict[str, Any]) -> Response:
        folder, name = _names(request, "folder", "name")
        big_size = field_int(body, "big_size")
        segment_size, segments = _segments(body, big_size)
        fields = Version(
            folder=folder,
            name=name,
            version=0,
            small=field_base64(body, "small"),
            key=field_base64(body, "key", KEY_BYTES),
            blob_id="",
            big_size=big_size,
            big_sha256=field_sha256(body, "big_sha256"),
            plaintext_size=field_int(body, "plaintext_size"),
            segment_size=segment_size,
            segments=segments,
        )
        upload_id = request.path_params["upload_id"]
        number = self._publisher.commit(upload_id, folder, name, fields, user)
        return answer(200, {"folder": folder, "name": name, "version": number})

    async def put_archive_key(self, request: Request) -> Response:
        user = await run_in_threadpool(self._auth.authorize, request, PUBLISHERS)
        (archive_id,) = _names(request, "archive_id")
        body = await read_json(request, self._config.max_json_bytes, self._config.idle_timeout)
        return await run_in_threadpool(self._put_archive_key, user, archive_id, body)

    def _put_archive_key(self, user: str, archive_id: str, body: dict[str, Any]) -> Response:
        key = field_base64(body, "key", KEY_BYTES)
        existing = self._store.add_archive_key(archive_id, key, user)
        if existing is None:
            return answer(201, {"archive_id": archive_id})
        if hmac.compare_digest(existing, key):
            return answer(200, {"archive_id": archive_id})
        raise conflict(f"another key is registered for archive {archive_id}")

    async def get_archive_key(self, request: Request) -> Response:
        return await run_in_threadpool(self._get_archive_key, request)

    def _get_archive_key(self, request: Request) -> Response:
        self._auth.authorize(request, READERS)
        (archive_id,) = _names(request, "archive_id")
        key = self._store.archive_key(archive_id)
        if key is None:
            raise not_found(f"no key for archive {archive_id}")
        body = {"archive_id": archive_id, "key": _b64(key)}
        return answer(200, body, {"Cache-Control": "no-store"})


def _names(request: Request, *params: str) -> tuple[str, ...]:
    values = []
    for param in params:
        value: str = request.path_params[param]
        try:
            check_name(value, param.replace("_", " "))
        except BadName as exc:
            raise bad_request(str(exc)) from exc
        values.append(value)
    return tuple(values)


def _version_number(text: str) -> int:
    """A version in a query or a path: ASCII digits, from 1 to 2^63-1; else 400."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not (
        1 <= int(text) <= MAX_VERSION
    ):
        raise bad_request("version must be an integer from 1 to 2^63-1")
    return int(text)


def _segments(body: dict[str, Any], big_size: int) -> tuple[int | None, bytes | None]:
    """The optional ``segment_size`` and ``segments`` of a commit: both or neither,
    the manifest one SHA-256 (32 bytes) per chunk of the big part."""
    if "segment_size" not in body and "segments" not in body:
        return None, None
    if "segment_size" not in body or "segments" not in body:
        raise bad_request("segment_size and segments come together")
    segment_size = field_int(body, "segment_size")
    if segment_size < 1:
        raise bad_request("field 'segment_size' must be at least 1")
    manifest = field_base64(body, "segments")
    expected = SEGMENT_DIGEST_BYTES * -(-big_size // segment_size)
    if len(manifest) != expected:
        raise bad_request(
            f"segments has {len(manifest)} bytes; {big_size} bytes in chunks of "
            f"{segment_size} need {expected} (32 per chunk)"
        )
    return segment_size, manifest


def _limit(text: str | None) -> int:
    if text is None:
        return LIST_DEFAULT
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or not (
        1 <= int(text) <= LIST_MAX
    ):
        raise bad_request(f"limit must be an integer from 1 to {LIST_MAX}")
    return int(text)


def _cursor_name(cursor: str | None) -> str:
    """The name a cursor continues after ("" for the first page); a bad cursor is 400."""
    if cursor is None:
        return ""
    invalid = bad_request("invalid cursor")
    if not cursor.isascii() or len(cursor) > 256:
        raise invalid
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        check_name(name, "cursor")
    except (ValueError, binascii.Error, BadName) as exc:
        raise invalid from exc
    return name


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
