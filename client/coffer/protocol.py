"""Wire constants of the cofferd socket protocol (see docs/protocol.md), and its fd framing.

Application error codes keep the HTTP meaning of the spec they come from, so
that 404 reads as "not found" on the socket as it did over HTTP. The JSON-RPC
2.0 reserved codes (-32700 ... -32600) keep theirs.
"""

from __future__ import annotations

import array
import enum
import socket

#: The packaged socket path; ``COFFER_SOCKET`` overrides it.
DEFAULT_SOCKET = "/run/coffer/cofferd.sock"

#: Longest request or response line, newline included. Longer requests are refused.
MAX_LINE_BYTES = 8 * 1024 * 1024

#: Most file descriptors one request may carry.
MAX_FDS = 1


def fds_received(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The fds that ``recvmsg``'s ancillary data carried (SCM_RIGHTS), in order.

    Both ends read fds this one way; what to do with them (close-on-exec, a
    cap, a truncated message) is each end's own rule.
    """
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


class ErrorCode(enum.IntEnum):
    # JSON-RPC 2.0
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # Application codes, with the HTTP status they stand for.
    BAD_REQUEST = 400  # bad params, bad name
    UNAUTHORIZED = 401  # no credentials, or refused upstream
    FORBIDDEN = 403  # this caller may not do that (an operator's method outside login_uids)
    NOT_FOUND = 404  # resource, key or archive
    CONFLICT = 409  # e.g. an unlock already runs
    OFFLINE_REFUSED = 412  # upstream unreachable and offline use not allowed (the rule is said)
    TOO_LARGE = 413  # over the inline cap or the line limit
    UNTRUSTED = 422  # the release is not what a publisher signed (data.rule names the rule)
    BUSY = 429  # cofferd serves too many connections: sent on accepting, then closed
    UPSTREAM_BAD_DATA = 502  # the upstream answered nonsense or served corrupt data
    UPSTREAM_UNAVAILABLE = 503  # unreachable, timed out, 5xx after retries
    SHUTTING_DOWN = 504  # cut short: the daemon is stopping
    STATE_UNWRITABLE = 507  # cofferd's state dir (its index) cannot be written
    # A caller who hung up gets no code: no response can reach it (local-only).
