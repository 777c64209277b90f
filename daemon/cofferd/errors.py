"""The exception tree of cofferd.

Services raise these; foreign exceptions (requests, docker, OSError) are
translated at the boundary with ``raise ... from exc``. One table,
:data:`WIRE`, gives each wire error its JSON-RPC code and short message; it is
looked up along the class's MRO, so its row order does not matter and a new
subclass answers with its nearest ancestor's row.

Two kinds, as systemd's varlink keeps them apart: *wire errors* are what a
caller can be told (every one has a row in :data:`WIRE`, and every code a
caller can get has a class, so :data:`WIRE` is the one table of short
messages: :func:`message_for`); *local errors*
(:class:`LocalError`) never cross the socket: an operator's config mistake, a
socket cofferd cannot serve on, a caller who is no longer there to answer.

::

    CofferError                  wire errors: each reaches the caller with its code
    ├── DecryptionError          any integrity failure of the encrypted format (opaque)
    ├── BadRequest               the caller's input is wrong
    │   ├── InvalidParams        params of the wrong shape or type (JSON-RPC -32602)
    │   ├── BadName              a folder, name or archive id fails the name rule
    │   └── TooLarge             over a documented size cap
    ├── Unauthorized             no credentials, or the upstream refused them
    ├── Forbidden                this caller may not: an operator's method outside login_uids
    ├── NotFound                 no such resource, key or archive
    ├── Conflict                 the operation clashes with one under way or with stored state
    ├── OfflineRefused           the upstream is unreachable and no offline use is allowed (412)
    ├── Untrusted                not what a publisher signed; ``rule`` names the rule (422)
    ├── UpstreamError            the upstream failed us
    │   ├── UpstreamUnavailable  unreachable, timed out, or 5xx after bounded retries
    │   ├── UpstreamProtocolError  it answered something the protocol does not allow
    │   └── CorruptData          what it served fails its size / sha256 / authentication
    ├── DockerError              the Docker engine failed us
    │   ├── DockerUnavailable    unreachable
    │   └── DockerRefused        it answered, and refused
    ├── ShuttingDown             cut short: the daemon is stopping (504)
    ├── Busy                     too many connections: told on accepting, then closed (429)
    ├── StateUnwritable          the state dir (the index) cannot be written (507)
    ├── ParseError, InvalidRequest, MethodNotFound, InternalError
    │                            the JSON-RPC layer's own (never raised: jsonrpcserver
    │                            answers them; InternalError stands for a bug)
    └── LocalError               never crosses the wire (no row in WIRE)
        ├── SettingsError        a config file or environment variable is unusable (exit 2)
        ├── ListenError          cofferd cannot serve on the socket it was given (exit 1)
        └── PeerGone             the caller hung up: logged, no response can be sent

Messages never carry secrets (passwords, tokens, keys).
"""

from __future__ import annotations

from coffer.protocol import ErrorCode


class CofferError(Exception):
    """Base of every error cofferd raises on purpose."""


class DecryptionError(CofferError):
    """The ciphertext does not authenticate.

    One opaque error for every integrity failure (truncation, extension,
    reordering, a flipped bit, a wrong key or associated data), so that a
    failure tells nothing about which check failed.
    """

    def __init__(self, message: str = "ciphertext failed authentication") -> None:
        super().__init__(message)


class BadRequest(CofferError):
    """The caller's input is wrong."""


class InvalidParams(BadRequest):
    """The params of a request have the wrong shape or type (JSON-RPC -32602)."""


class BadName(BadRequest):
    """A folder, resource name or archive id does not follow the name rule."""


class TooLarge(BadRequest):
    """The input is over a documented size cap."""


class Unauthorized(CofferError):
    """No credentials are set, or the upstream refused them."""


class Forbidden(CofferError):
    """The caller's uid may not make this call: an operator's, and it is not in login_uids."""


class NotFound(CofferError):
    """The resource, key or archive does not exist."""


class Conflict(CofferError):
    """The operation clashes with one under way or with stored state."""


class OfflineRefused(CofferError):
    """The upstream is unreachable and the rules for offline use say no.

    The message names the rule: no record, lease expired at T, clock behind the
    trusted time, offline longer than the lease allows, not cached, or a record
    or lease that does not verify.
    """


class Untrusted(CofferError):
    """The release is not what a publisher signed (docs/trust.md), or nothing is pinned.

    ``rule`` names the rule that refused it; it goes to the caller as
    ``data.rule`` beside the detail (:attr:`wire_data`).
    """

    RULES = frozenset(
        {
            "not-pinned",
            "unsigned",
            "rollback",
            "frozen",
            "mix-and-match",
            "endless-data",
            "signature",
            "digest",
            "key-commitment",
            "segment",
        }
    )

    def __init__(self, message: str, *, rule: str = "unsigned") -> None:
        if rule not in self.RULES:
            raise ValueError(f"no trust rule {rule!r}")
        super().__init__(message)
        self.rule = rule

    @property
    def wire_data(self) -> dict[str, str]:
        return {"rule": self.rule}


class UpstreamError(CofferError):
    """The upstream failed us."""


class UpstreamUnavailable(UpstreamError):
    """The upstream is unreachable, timed out, or kept answering 5xx."""


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something protocol v1 does not allow."""


class CorruptData(UpstreamError):
    """Data from the upstream, the CDN or the cache fails its checks."""


class DockerError(CofferError):
    """The Docker engine failed us."""


class DockerUnavailable(DockerError):
    """The Docker engine cannot be reached."""


class DockerRefused(DockerError):
    """The Docker engine answered and refused the request."""


class ShuttingDown(CofferError):
    """The work was cut short because the daemon is stopping."""


class Busy(CofferError):
    """cofferd serves too many connections (of this uid, or in all)."""


class ParseError(CofferError):
    """The request line is not UTF-8 JSON (JSON-RPC -32700)."""


class InvalidRequest(CofferError):
    """The line is JSON but not one JSON-RPC 2.0 request object (JSON-RPC -32600)."""


class MethodNotFound(CofferError):
    """No method of that name (JSON-RPC -32601)."""


class InternalError(CofferError):
    """A bug: whatever was raised outside the tree is answered as this (JSON-RPC -32603)."""


class StateUnwritable(CofferError):
    """A change the state dir must keep (the index) cannot be written there."""


class LocalError(CofferError):
    """An error that never crosses the wire: it is logged, or ends the process."""


class SettingsError(LocalError):
    """A config file or environment variable holds something unusable.

    An operator's mistake, found before any caller connects: not a caller's
    bad request.
    """


class ListenError(LocalError):
    """cofferd cannot serve on the socket it was given."""


class PeerGone(LocalError):
    """The caller hung up (its connection, or the read end of its output pipe).

    Nobody is left to read a response: the call is logged as hung up and the
    connection closed without one.
    """


#: Wire error class → (code, short message). Looked up along the MRO
#: (:func:`wire_code`), so the order of the rows does not matter to an
#: exception; a code's own short message (:func:`message_for`) is that of its
#: first row.
WIRE: dict[type[CofferError], tuple[ErrorCode, str]] = {
    ParseError: (ErrorCode.PARSE_ERROR, "Parse error"),
    InvalidRequest: (ErrorCode.INVALID_REQUEST, "Invalid request"),
    MethodNotFound: (ErrorCode.METHOD_NOT_FOUND, "Method not found"),
    InternalError: (ErrorCode.INTERNAL_ERROR, "Internal error"),
    BadRequest: (ErrorCode.BAD_REQUEST, "Bad request"),
    InvalidParams: (ErrorCode.INVALID_PARAMS, "Invalid params"),
    BadName: (ErrorCode.BAD_REQUEST, "Bad name"),
    TooLarge: (ErrorCode.TOO_LARGE, "Too large"),
    Unauthorized: (ErrorCode.UNAUTHORIZED, "Unauthorized"),
    Forbidden: (ErrorCode.FORBIDDEN, "Forbidden"),
    NotFound: (ErrorCode.NOT_FOUND, "Not found"),
    Conflict: (ErrorCode.CONFLICT, "Conflict"),
    UpstreamError: (ErrorCode.UPSTREAM_BAD_DATA, "Upstream bad data"),
    UpstreamUnavailable: (ErrorCode.UPSTREAM_UNAVAILABLE, "Upstream unavailable"),
    DecryptionError: (ErrorCode.UPSTREAM_BAD_DATA, "Decryption failed"),
    DockerError: (ErrorCode.UPSTREAM_BAD_DATA, "Docker refused"),
    DockerUnavailable: (ErrorCode.UPSTREAM_UNAVAILABLE, "Docker unavailable"),
    ShuttingDown: (ErrorCode.SHUTTING_DOWN, "Shutting down"),
    Busy: (ErrorCode.BUSY, "Busy"),
    OfflineRefused: (ErrorCode.OFFLINE_REFUSED, "Offline use refused"),
    Untrusted: (ErrorCode.UNTRUSTED, "Untrusted"),
    StateUnwritable: (ErrorCode.STATE_UNWRITABLE, "State not writable"),
}


def wire_code(
    exc: BaseException, table: dict[type[CofferError], tuple[ErrorCode, str]] = WIRE
) -> tuple[ErrorCode, str] | None:
    """``(code, message)`` of the nearest class in ``exc``'s MRO with a row, or None.

    None for a local error and for anything outside the tree (a bug).
    """
    if isinstance(exc, LocalError):
        return None
    for kind in type(exc).__mro__:
        row = table.get(kind)
        if row is not None:
            return row
    return None


def message_for(code: int) -> str:
    """The short message of ``code``: its first row in :data:`WIRE`."""
    for row_code, message in WIRE.values():
        if row_code == code:
            return message
    return WIRE[InternalError][1]
