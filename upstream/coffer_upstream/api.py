"""The ``/v1`` endpoints of the resource API, and ``/health``.

Checks run in this order, so answers are predictable: the bearer token (401),
the role (403), the names in the path (400), the body (400/413), then the
state (404/409).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from coffer.names import BadName, check_name
from coffer_upstream.bodies import field_base64, field_int, field_sha256, field_str
from coffer_upstream.config import ServerConfig
from coffer_upstream.errors import (
    HttpError,
    bad_request,
    conflict,
    forbidden,
    not_found,
    unauthorized,
)
from coffer_upstream.leases import LeaseIssuer, b64url
from coffer_upstream.passwords import DUMMY_HASH, verify_password
from coffer_upstream.ratelimit import LoginLimiter
from coffer_upstream.request import Request
from coffer_upstream.responses import JsonResponse
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store, Version
from coffer_upstream.uploads import Publisher

KEY_BYTES = 32
#: What each role may do, as the set of roles allowed per kind of call.
READERS = frozenset({"reader", "publisher"})
PUBLISHERS = frozenset({"publisher"})
_MAX_EMAIL = 254
_MAX_PASSWORD = 1024
#: Items of a folder listing when the query names no ``limit``, and the most it may name.
LIST_DEFAULT = 100
LIST_MAX = 1000


class Api:
    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        signer: Signer,
        limiter: LoginLimiter,
        publisher: Publisher,
        leases: LeaseIssuer,
        base_url: Callable[[], str],
    ) -> None:
        self._config = config
        self._store = store
        self._signer = signer
        self._limiter = limiter
        self._publisher = publisher
        self._leases = leases
        self._base_url = base_url

    def health(self, request: Request) -> JsonResponse:
        return JsonResponse(200, {"status": "ok"})

    def login(self, request: Request) -> JsonResponse:
        body = request.json()
        email = field_str(body, "email", _MAX_EMAIL)
        password = field_str(body, "password", _MAX_PASSWORD)
        with self._limiter.check(email) as attempt:
            if attempt.retry_after is not None:
                raise HttpError(
                    429,
                    "too many failed logins, retry later",
                    {"Retry-After": str(attempt.retry_after)},
                )
            user = self._store.user(email)
            # The hash is checked even for an unknown email, against a dummy no
            # password matches: both failures cost the same time and read the same.
            matches = verify_password(password, user.password_hash if user else DUMMY_HASH)
            if user is None or not matches:
                raise unauthorized("invalid email or password")
            attempt.succeeded = True
        request.user = user.email
        ttl = self._config.token_ttl
        token = self._signer.issue_token(user.email, user.role, ttl)
        return JsonResponse(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": ttl},
            {"Cache-Control": "no-store"},
        )

    def list_resources(self, request: Request, folder: str) -> JsonResponse:
        self._authorize(request, READERS)
        _names(folder=folder)
        limit = _limit(request.query.get("limit"))
        after = _cursor_name(request.query.get("cursor"))
        # One more than asked says whether there is a next page.
        found = self._store.current_versions(folder, after, limit + 1)
        page = found[:limit]
        more = len(found) > limit
        return JsonResponse(
            200,
            {
                "items": [
                    {
                        "name": item.name,
                        "version": item.version,
                        "plaintext_size": item.plaintext_size,
                        "big_size": item.big_size,
                        "updated_at": item.updated_at,
                    }
                    for item in page
                ],
                "next_cursor": b64url(page[-1].name.encode("ascii")) if more else None,
            },
        )

    def get_resource(self, request: Request, folder: str, name: str) -> JsonResponse:
        user = self._authorize(request, READERS)
        _names(folder=folder, name=name)
        version = self._store.current_version(folder, name)
        if version is None:
            raise not_found(f"no resource {folder}/{name}")
        lease = self._leases.issue(version, user, self._signer.now())
        return JsonResponse(
            200,
            {
                "folder": version.folder,
                "name": version.name,
                "version": version.version,
                "small": _b64(version.small),
                "key": _b64(version.key),
                "big_url": self._blob_url("GET", version.blob_id, self._config.url_ttl),
                "big_size": version.big_size,
                "big_sha256": version.big_sha256,
                "plaintext_size": version.plaintext_size,
                "lease": lease,
            },
            {"Cache-Control": "no-store"},
        )

    def delete_resource(self, request: Request, folder: str, name: str) -> JsonResponse:
        self._authorize(request, PUBLISHERS)
        _names(folder=folder, name=name)
        deleted = self._publisher.retire(folder, name)
        if not deleted:
            raise not_found(f"no resource {folder}/{name}")
        return JsonResponse(200, {"folder": folder, "name": name, "deleted_versions": deleted})

    def begin_upload(self, request: Request, folder: str, name: str) -> JsonResponse:
        user = self._authorize(request, PUBLISHERS)
        _names(folder=folder, name=name)
        request.json(empty_is_object=True)  # no fields yet; unknown ones are ignored
        upload = self._publisher.begin(folder, name, user)
        ttl = self._config.upload_ttl
        return JsonResponse(
            201,
            {
                "upload_id": upload.upload_id,
                "big_url": self._blob_url("PUT", upload.blob_id, ttl),
                "expires_in": ttl,
            },
        )

    def commit_upload(
        self, request: Request, folder: str, name: str, upload_id: str
    ) -> JsonResponse:
        user = self._authorize(request, PUBLISHERS)
        _names(folder=folder, name=name)
        body = request.json()
        fields = Version(
            folder=folder,
            name=name,
            version=0,
            small=field_base64(body, "small"),
            key=field_base64(body, "key", KEY_BYTES),
            blob_id="",
            big_size=field_int(body, "big_size"),
            big_sha256=field_sha256(body, "big_sha256"),
            plaintext_size=field_int(body, "plaintext_size"),
        )
        number = self._publisher.commit(upload_id, folder, name, fields, user)
        return JsonResponse(200, {"folder": folder, "name": name, "version": number})

    def put_archive_key(self, request: Request, archive_id: str) -> JsonResponse:
        user = self._authorize(request, PUBLISHERS)
        _names(archive_id=archive_id)
        key = field_base64(request.json(), "key", KEY_BYTES)
        existing = self._store.add_archive_key(archive_id, key, user)
        if existing is None:
            return JsonResponse(201, {"archive_id": archive_id})
        if hmac.compare_digest(existing, key):
            return JsonResponse(200, {"archive_id": archive_id})
        raise conflict(f"another key is registered for archive {archive_id}")

    def get_archive_key(self, request: Request, archive_id: str) -> JsonResponse:
        self._authorize(request, READERS)
        _names(archive_id=archive_id)
        key = self._store.archive_key(archive_id)
        if key is None:
            raise not_found(f"no key for archive {archive_id}")
        return JsonResponse(
            200, {"archive_id": archive_id, "key": _b64(key)}, {"Cache-Control": "no-store"}
        )

    def _authorize(self, request: Request, roles: frozenset[str]) -> str:
        """The email the bearer token speaks for, if its role is in ``roles``."""
        token = request.bearer()
        if token is None:
            raise unauthorized("missing bearer token")
        claims = self._signer.check_token(token)
        request.user = claims.email
        if claims.role not in roles:
            raise forbidden(f"role {claims.role} may not do this")
        return claims.email

    def _blob_url(self, method: str, blob_id: str, ttl: int) -> str:
        query = self._signer.url_query(method, blob_id, ttl)
        return f"{self._base_url()}/cdn/{blob_id}?{query}"


def _names(**names: str) -> None:
    for what, value in names.items():
        try:
            check_name(value, what.replace("_", " "))
        except BadName as exc:
            raise bad_request(str(exc)) from exc


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
