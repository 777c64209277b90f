"""The exceptions of the coffer client library, one per kind of failure.

Errors the daemon reports, and failures to reach it, raise one of::

    CofferRPCError                 .code (int | None), .message, .detail
    ├── BadRequest                 400 bad params / bad name
    │   ├── InvalidParams          -32602 wrong or missing params
    │   └── TooLarge               413 over a size cap
    ├── Unauthorized               401 no credentials, or the upstream refused them
    ├── Forbidden                  403 this caller may not do that (e.g. login)
    ├── NotFound                   404 no such resource, key or archive
    ├── Conflict                   409 clashes with work under way
    ├── Untrusted                  422 not what a publisher signed: .rule names the rule
    ├── UpstreamError
    │   ├── UpstreamBadData        502 the upstream served corrupt or tampered data
    │   └── UpstreamUnavailable    503 the upstream cannot be reached
    ├── ShuttingDown               504 cut short: the daemon is stopping
    ├── InternalError              -32603 the daemon failed
    ├── ProtocolError              -32700 / -32600, or an answer the protocol does not allow
    │   └── MethodNotFound         -32601 the daemon does not know the method
    └── DaemonUnavailable          no daemon: socket missing, refused, permission denied
        ├── DaemonBusy             429 before reading the request: too many connections
        └── DaemonTimeout          the daemon went silent for ``timeout`` seconds

``code`` is the JSON-RPC error code (:class:`coffer.protocol.ErrorCode`).
Errors of the caller's own streams (``out.write``, ``src.read``) are not
translated: they propagate as they are (usually :class:`OSError`).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

from coffer.protocol import ErrorCode


class CofferRPCError(Exception):
    """Base of every error this library raises on the daemon's behalf.

    ``code`` is the JSON-RPC error code (``None`` when no daemon answered),
    ``message`` its short name, ``detail`` a sentence a person can act on.
    """

    code: int | None = None
    default_message = "Error"

    def __init__(
        self,
        detail: str,
        *,
        code: int | None = None,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.message = message or self.default_message
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return self.detail


class BadRequest(CofferRPCError):
    code = ErrorCode.BAD_REQUEST
    default_message = "Bad request"


class InvalidParams(BadRequest):
    code = ErrorCode.INVALID_PARAMS
    default_message = "Invalid params"


class TooLarge(BadRequest):
    code = ErrorCode.TOO_LARGE
    default_message = "Too large"


class Unauthorized(CofferRPCError):
    code = ErrorCode.UNAUTHORIZED
    default_message = "Unauthorized"


class Forbidden(CofferRPCError):
    code = ErrorCode.FORBIDDEN
    default_message = "Forbidden"


class NotFound(CofferRPCError):
    code = ErrorCode.NOT_FOUND
    default_message = "Not found"


class Conflict(CofferRPCError):
    code = ErrorCode.CONFLICT
    default_message = "Conflict"


class OfflineRefused(CofferRPCError):
    code = ErrorCode.OFFLINE_REFUSED
    default_message = "Offline use refused"


class Untrusted(CofferRPCError):
    """The release is not what a publisher signed, or no root of trust is pinned.

    ``rule`` is the rule that refused it (docs/trust.md): ``not-pinned``,
    ``unsigned``, ``rollback``, ``frozen``, ``mix-and-match``,
    ``endless-data``, ``signature``, ``digest``, ``key-commitment``, ``segment``.
    """

    code = ErrorCode.UNTRUSTED
    default_message = "Untrusted"

    @property
    def rule(self) -> str | None:
        rule = self.data.get("rule")
        return rule if isinstance(rule, str) else None


class UpstreamError(CofferRPCError):
    default_message = "Upstream error"


class UpstreamBadData(UpstreamError):
    code = ErrorCode.UPSTREAM_BAD_DATA
    default_message = "Upstream bad data"


class UpstreamUnavailable(UpstreamError):
    code = ErrorCode.UPSTREAM_UNAVAILABLE
    default_message = "Upstream unavailable"


class ShuttingDown(CofferRPCError):
    code = ErrorCode.SHUTTING_DOWN
    default_message = "Shutting down"


class StateUnwritable(CofferRPCError):
    code = ErrorCode.STATE_UNWRITABLE
    default_message = "State not writable"


class InternalError(CofferRPCError):
    code = ErrorCode.INTERNAL_ERROR
    default_message = "Internal error"


class ProtocolError(CofferRPCError):
    code = ErrorCode.PARSE_ERROR
    default_message = "Protocol error"


class MethodNotFound(ProtocolError):
    code = ErrorCode.METHOD_NOT_FOUND
    default_message = "Method not found"


class DaemonUnavailable(CofferRPCError):
    code: int | None = None
    default_message = "Daemon unavailable"


class DaemonBusy(DaemonUnavailable):
    code = ErrorCode.BUSY
    default_message = "Busy"


class DaemonTimeout(DaemonUnavailable):
    default_message = "Timed out"


_ERRORS: dict[int, type[CofferRPCError]] = {
    ErrorCode.PARSE_ERROR: ProtocolError,
    ErrorCode.INVALID_REQUEST: ProtocolError,
    ErrorCode.METHOD_NOT_FOUND: MethodNotFound,
    ErrorCode.INVALID_PARAMS: InvalidParams,
    ErrorCode.INTERNAL_ERROR: InternalError,
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.OFFLINE_REFUSED: OfflineRefused,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.UNTRUSTED: Untrusted,
    ErrorCode.BUSY: DaemonBusy,
    ErrorCode.UPSTREAM_BAD_DATA: UpstreamBadData,
    ErrorCode.UPSTREAM_UNAVAILABLE: UpstreamUnavailable,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.STATE_UNWRITABLE: StateUnwritable,
}


def error_from_wire(error: object) -> CofferRPCError:
    """The exception for a JSON-RPC ``error`` member, by its code (unknown codes give the base)."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return ProtocolError("cofferd sent a malformed error object")
    code: int = error["code"]
    message = error.get("message") if isinstance(error.get("message"), str) else None
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    assert isinstance(data, dict)
    detail = data.get("detail")
    if not isinstance(detail, str) or not detail:
        detail = message or f"cofferd error {code}"
    cls = _ERRORS.get(code, CofferRPCError)
    return cls(detail, code=code, message=message, data=data)


def daemon_unavailable(path: str, exc: OSError) -> DaemonUnavailable:
    """The error for a failed connect to ``path``, saying which failure it was."""
    if isinstance(exc, FileNotFoundError):
        why = f"no socket at {path}: is cofferd running? (set COFFER_SOCKET or --socket)"
    elif isinstance(exc, ConnectionRefusedError):
        why = f"connection refused on {path}: cofferd is not listening there"
    elif isinstance(exc, PermissionError):
        why = f"permission denied on {path}: join the socket's group (coffer) or run as root"
    elif isinstance(exc, TimeoutError):
        return DaemonTimeout(f"cofferd did not accept a connection on {path} in time")
    elif exc.errno == errno.ENOTSOCK:
        why = f"{path} is not a socket"
    else:
        why = f"cannot connect to {path}: {exc.strerror or exc}"
    return DaemonUnavailable(why)


__all__ = [
    "BadRequest",
    "CofferRPCError",
    "Conflict",
    "DaemonBusy",
    "DaemonTimeout",
    "DaemonUnavailable",
    "Forbidden",
    "InternalError",
    "InvalidParams",
    "MethodNotFound",
    "NotFound",
    "OfflineRefused",
    "ProtocolError",
    "ShuttingDown",
    "StateUnwritable",
    "TooLarge",
    "Unauthorized",
    "Untrusted",
    "UpstreamBadData",
    "UpstreamError",
    "UpstreamUnavailable",
    "daemon_unavailable",
    "error_from_wire",
]
