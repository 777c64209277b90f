"""What a method knows about the call it serves: who asked, which fds came, whether to stop.

Peer credentials travel with the connection as one small frozen object taken
from ``SO_PEERCRED`` once, when the connection is accepted; they describe the
process that connected, never anything the caller claims.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cofferd.errors import BadRequest, PeerGone, ShuttingDown

if TYPE_CHECKING:
    from cofferd.rpc.dispatch.services import Services

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Linux >= 4.13; the socket module does not name it.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
# CPython caps getsockopt buffers at 1024 bytes: room for 256 gids (NGROUPS_MAX is
# 65536, but a caller with more than 256 groups keeps only its primary gid here).
_MAX_GROUPS = 256


@dataclass(frozen=True)
class PeerCred:
    """The connecting process as the kernel saw it at connect time."""

    pid: int
    uid: int
    gid: int
    #: Supplementary groups at connect time (SO_PEERGROUPS); empty if unknown.
    groups: frozenset[int] = frozenset()

    @classmethod
    def of(cls, sock: socket.socket) -> PeerCred:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
        except OSError:  # an older kernel, or absurdly many groups: the primary gid remains
            raw = b""
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        return cls(pid=pid, uid=uid, gid=gid, groups=frozenset(groups))

    def __str__(self) -> str:
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"


@dataclass(slots=True)
class Call:
    """One request being served: the context jsonrpcserver passes as first argument.

    ``services`` is what methods may use of the daemon
    (:class:`~cofferd.rpc.dispatch.services.Services`, None outside the daemon,
    in transport tests); ``fds``
    are the descriptors that came with the request line, owned by the call: a
    method takes one with :meth:`take_fd` and then must close it; whatever is
    left is closed by the transport when the call ends.
    """

    services: Services | None
    peer: PeerCred
    fds: list[int] = field(default_factory=list)
    #: Set when the daemon stops or the peer hung up: long work checks it between
    #: chunks. One per connection (a call is one of its requests), made once.
    cancel: threading.Event = field(default_factory=threading.Event)
    #: The connection, to notice a peer that hung up; None outside a socket (tests).
    conn: socket.socket | None = None
    method: str = ""
    #: Set when the method found the caller gone: no response is sent.
    hung_up: bool = False
    #: Fds to send back with a successful response (SCM_RIGHTS on its line),
    #: owned by the call: the transport closes its copies once sent, and all of
    #: them unsent when the answer is an error or nobody is left to take it.
    reply_fds: list[int] = field(default_factory=list)
    #: The wire code the method answered with; None after a success.
    error_code: int | None = None
    #: What the audit record says about the resource (``folder``, ``name``,
    #: ``version``, ``bytes``) and the byte and cache counters take (``bytes``,
    #: ``from_cache``): filled by the dispatcher from exactly the params and
    #: result members the method's spec names. Never a secret: nothing else of
    #: the params goes here.
    audit_fields: dict[str, Any] | None = None

    @property
    def app(self) -> Services:
        """The daemon's services; a method called without them (outside the daemon) is a bug."""
        assert self.services is not None, "a method called without the daemon's services"
        return self.services

    def take_fd(self) -> int | None:
        """The request's fd, now owned by the caller, or None when none came."""
        if len(self.fds) > 1:
            raise BadRequest("at most one file descriptor may come with a request")
        return self.fds.pop() if self.fds else None

    def close_fds(self) -> None:
        while self.fds:
            fd = self.fds.pop()
            with contextlib.suppress(
                OSError
            ):  # already closed by its user: nothing left to release
                os.close(fd)

    def close_reply_fds(self) -> None:
        while self.reply_fds:
            with contextlib.suppress(OSError):  # nothing left to release
                os.close(self.reply_fds.pop())

    def peer_gone(self) -> bool:
        """Whether the peer has hung up (or shut down its writing side) by now."""
        if self.conn is None:
            return False
        poller = select.poll()
        poller.register(self.conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def check(self) -> None:
        """Raise :class:`ShuttingDown` or :class:`PeerGone` if the work should stop now."""
        if self.cancel.is_set():
            raise ShuttingDown("cofferd is shutting down")
        if self.peer_gone():
            self.cancel.set()
            raise PeerGone("the caller hung up")
