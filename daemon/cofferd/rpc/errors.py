"""The one mapping from :mod:`cofferd.errors` to JSON-RPC error objects.

Every error a caller sees is ``{"code", "message", "data": {"detail"}}``: the
code is a :class:`coffer.protocol.ErrorCode` carrying the HTTP meaning of the
spec, the message a short fixed name, the detail a sentence a person can act
on. An error outside the tree is a bug: the caller gets a fixed detail and the
traceback goes to the log, so internals never reach the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coffer.protocol import ErrorCode
from cofferd import errors


class InvalidParams(errors.BadRequest):
    """The params of a request have the wrong shape or type (JSON-RPC -32602)."""


#: Most specific first: the first class the error is an instance of wins.
_TABLE: tuple[tuple[type[errors.CofferError], ErrorCode, str], ...] = (
    (InvalidParams, ErrorCode.INVALID_PARAMS, "Invalid params"),
    (errors.TooLarge, ErrorCode.TOO_LARGE, "Too large"),
    (errors.BadName, ErrorCode.BAD_REQUEST, "Bad name"),
    (errors.BadRequest, ErrorCode.BAD_REQUEST, "Bad request"),
    (errors.Unauthorized, ErrorCode.UNAUTHORIZED, "Unauthorized"),
    (errors.NotFound, ErrorCode.NOT_FOUND, "Not found"),
    (errors.Conflict, ErrorCode.CONFLICT, "Conflict"),
    (errors.UpstreamUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, "Upstream unavailable"),
    (errors.UpstreamError, ErrorCode.UPSTREAM_BAD_DATA, "Upstream bad data"),
    (errors.DecryptionError, ErrorCode.UPSTREAM_BAD_DATA, "Upstream bad data"),
    (errors.DockerUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, "Docker unavailable"),
    (errors.DockerError, ErrorCode.UPSTREAM_BAD_DATA, "Docker refused"),
    (errors.Cancelled, ErrorCode.SHUTTING_DOWN, "Cancelled"),
)

INTERNAL_DETAIL = "cofferd failed unexpectedly; its log has the details"


@dataclass(frozen=True)
class RpcError:
    """A JSON-RPC error object, ready to serialize."""

    code: int
    message: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"detail": self.detail}}


def to_rpc_error(exc: BaseException) -> RpcError:
    """The error object for ``exc``; an unknown exception becomes an opaque internal error."""
    for kind, code, message in _TABLE:
        if isinstance(exc, kind):
            return RpcError(int(code), message, str(exc) or message)
    return RpcError(int(ErrorCode.INTERNAL_ERROR), "Internal error", INTERNAL_DETAIL)


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is part of the error tree (logged briefly, not as a bug)."""
    return isinstance(exc, errors.CofferError)
