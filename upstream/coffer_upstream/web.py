"""What every endpoint shares: reading a capped JSON body, the bearer token, answers.

Errors: endpoints raise :class:`HttpError`; :func:`exception_handlers` turns it
(and the store's and the database's errors) into ``{"detail": ...}`` answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from coffer_upstream.blobstore import StoreFull, StoreUnavailable
from coffer_upstream.db import DatabaseError
from coffer_upstream.errors import HttpError
from coffer_upstream.fields import parse_json_object
from coffer_upstream.hashing import Busy

log = logging.getLogger("coffer_upstream")


async def body_chunks(request: Request, idle: float) -> AsyncIterator[bytes]:
    """The request body as it comes; a client silent for ``idle`` seconds gets 408.

    uvicorn bounds the wait for a request's head, not for its body: this does.
    """
    chunks = request.stream()
    while True:
        try:
            with anyio.fail_after(idle):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise HttpError(408, "the request body stalled", {"Connection": "close"}) from exc
        yield chunk


async def read_json(
    request: Request, limit: int, idle: float, empty_is_object: bool = False
) -> dict[str, Any]:
    """The body as a JSON object of at most ``limit`` bytes (else 413), read as it comes."""
    return parse_json_object(await read_body(request, limit, idle), empty_is_object)


async def read_body(request: Request, limit: int, idle: float) -> bytes:
    """The body, at most ``limit`` bytes (else 413), read as it comes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body over {limit} bytes", {"Connection": "close"})
    raw = bytearray()
    try:
        async for chunk in body_chunks(request, idle):
            raw += chunk
            if len(raw) > limit:
                raise HttpError(413, f"request body over {limit} bytes", {"Connection": "close"})
    except ClientDisconnect as exc:
        raise HttpError(400, "the request body ended early") from exc
    return bytes(raw)


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


class EncodedSlashes:
    """Keep an encoded slash (``%2F``) inside its path segment.

    uvicorn decodes the whole path, so ``/v1/resources/a%2Fb/m`` would route as
    four segments; decoded segment by segment, a name holding a slash stays one
    segment and is refused as a bad name (400) after the token check (401).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("raw_path") or b""
        if scope["type"] == "http" and b"%2f" in raw.lower():
            segments = raw.split(b"?", 1)[0].decode("ascii", "replace").split("/")
            scope = dict(scope)
            scope["path"] = "/".join(unquote(segment).replace("/", "%2F") for segment in segments)
        await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**endpoints: Endpoint) -> Endpoint:
    """One endpoint for a path served by several methods (one route: one Allow header)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return endpoint
