"""The one exception the request handlers raise: an HTTP status and a detail.

Every error answer of the server is ``{"detail": "..."}`` with the status of
the :class:`HttpError` that produced it (``web.exception_handlers`` maps the
store's and the database's errors too). Foreign exceptions are translated at
the place they happen, with ``raise ... from exc``. Details never carry secrets.
"""

from __future__ import annotations

from collections.abc import Mapping


class HttpError(Exception):
    """An error answer: ``status`` with body ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def bad_request(detail: str) -> HttpError:
    return HttpError(400, detail)


def unauthorized(detail: str) -> HttpError:
    # RFC 6750: a 401 names the scheme the client should use.
    return HttpError(401, detail, {"WWW-Authenticate": 'Bearer realm="coffer"'})


def forbidden(detail: str) -> HttpError:
    return HttpError(403, detail)


def not_found(detail: str) -> HttpError:
    return HttpError(404, detail)


def conflict(detail: str) -> HttpError:
    return HttpError(409, detail)
