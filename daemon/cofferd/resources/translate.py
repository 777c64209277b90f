"""requests' answers and failures, translated into :mod:`cofferd.errors`.

The client decides on the HTTP status, never on the text of ``detail``
(docs/upstream-protocol.md, "Errors"). Messages never quote a URL: requests'
own ones do, and a CDN URL's query string is a credential.
"""

from __future__ import annotations

from typing import Any

import requests
import urllib3.exceptions

from cofferd.errors import (
    BadRequest,
    Conflict,
    NotFound,
    TooLarge,
    Unauthorized,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from cofferd.foreign import printable


def never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed while connecting, so it cannot have reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def describe(exc: BaseException) -> str:
    # requests' own messages quote the URL, which for the CDN is a capability.
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.Timeout):
        return "timed out waiting for an answer"
    if isinstance(exc, requests.ConnectionError) and never_sent(exc):
        return "cannot connect"
    if isinstance(exc, requests.RequestException):
        return "the connection failed"
    return str(exc)


def json_body(resp: requests.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamProtocolError(f"{what}: the upstream's answer is not JSON") from exc


def _detail(resp: requests.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return f"HTTP {resp.status_code}"
    if not isinstance(detail, str):
        return f"HTTP {resp.status_code}"
    # The upstream's words go into our logs and errors: printable and short only.
    return printable(detail, 200)


def raise_for_status(resp: requests.Response, what: str) -> None:
    status = resp.status_code
    if 200 <= status < 300:
        return
    detail = _detail(resp)
    if status == 400:
        raise BadRequest(f"{what}: the upstream refused the request: {detail}")
    if status == 401:
        raise Unauthorized(f"{what}: the upstream refused the credentials")
    if status == 403:
        raise Unauthorized(f"{what}: this account may not do that")
    if status == 404:
        raise NotFound(f"{what}: not found")
    if status == 409:
        raise Conflict(f"{what}: {detail}")
    if status == 413:
        raise TooLarge(f"{what}: too large for the upstream")
    if status == 429 or status >= 500:
        raise UpstreamUnavailable(f"{what}: the upstream answered HTTP {status}")
    raise UpstreamProtocolError(f"{what}: unexpected HTTP {status}")


def check_cdn_status(
    resp: requests.Response, *, partial: bool, expected: tuple[int, ...] = ()
) -> None:
    status = resp.status_code
    wanted = expected or ((206,) if partial else (200,))
    if status in wanted:
        return
    if status in (401, 403):
        raise UpstreamProtocolError(f"the CDN refused the presigned URL (HTTP {status})")
    if status == 404:
        raise UpstreamProtocolError("the CDN has no such big part")
    if status >= 500:
        raise UpstreamUnavailable(f"the CDN answered HTTP {status}")
    raise UpstreamProtocolError(f"the CDN answered HTTP {status}")
