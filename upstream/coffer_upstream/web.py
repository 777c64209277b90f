"""What every endpoint shares: reading a capped JSON body, the bearer token, answers.

Errors: endpoints raise :class:`HttpError`; :func:`exception_handlers` turns it
(and the store's and the database's errors) into ``{"detail": ...}`` answers.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from coffer_upstream.blobstore import StoreFull, StoreUnavailable
from coffer_upstream.db import DatabaseError
from coffer_upstream.errors import HttpError
from coffer_upstream.fields import parse_json_object
from coffer_upstream.hashing import Busy

log = logging.getLogger("coffer_upstream")


async def read_json(request: Request, limit: int, empty_is_object: bool = False) -> dict[str, Any]:
    """The body as a JSON object of at most ``limit`` bytes (else 413), read as it comes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body over {limit} bytes", {"Connection": "close"})
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise HttpError(413, f"request body over {limit} bytes", {"Connection": "close"})
    except ClientDisconnect as exc:
        raise HttpError(400, "the request body ended early") from exc
    return parse_json_object(bytes(raw), empty_is_object)


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers)


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return _detail(exc.status, exc.detail, exc.headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    # The router's own answers: no route (404), wrong method (405, with Allow).
    assert isinstance(exc, HTTPException)
    detail = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return _detail(exc.status_code, detail, dict(exc.headers or {}))


async def _store_error(request: Request, exc: Exception) -> Response:
    log.warning("big part storage failed: %s", exc)
    if isinstance(exc, StoreFull):
        return _detail(507, "the big part storage is full")
    return _detail(503, "the big part storage failed", {"Retry-After": "1"})


async def _database_error(request: Request, exc: Exception) -> Response:
    log.warning("database error: %s", type(exc).__name__)
    return _detail(503, "storage busy, retry", {"Retry-After": "1"})


async def _busy(request: Request, exc: Exception) -> Response:
    return _detail(503, "too many logins under way, retry", {"Retry-After": "1"})


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _detail(500, "internal error")


def exception_handlers() -> dict[Any, Any]:
    return {
        HttpError: _http_error,
        HTTPException: _starlette_error,
        StoreFull: _store_error,
        StoreUnavailable: _store_error,
        DatabaseError: _database_error,
        Busy: _busy,
        Exception: _internal,
    }
