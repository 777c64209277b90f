"""The Unix-socket transport: listening, connections, framing, fds, shutdown.

One thread per connection, each serving its requests one after another: read
a line (fds that arrive with it attach to it), dispatch, write one response
line. A line longer than :data:`coffer.protocol.MAX_LINE_BYTES` cannot be
resynchronised, so it gets a ``TOO_LARGE`` error and the connection is closed;
every other bad line gets its JSON-RPC error and the connection goes on.

Per-caller limits (docs/reliability.md), so one caller cannot stop the others:
a connection with no complete request for ``idle_timeout`` s is closed, and a
started line must end within ``partial_line_timeout`` s; one uid holds at most
``max_per_uid`` connections (a refusal is ``BUSY``, then the socket closes);
fds parked on a line not yet complete are capped at the per-request maximum
(the excess is closed at once and the line, when it ends, is refused); a
failing ``accept`` (e.g. ``EMFILE``) logs one line per interval with a count.

The read deadlines cost the serving threads nothing: a connection's thread
reads with a plain blocking ``recvmsg`` (one GIL hand-off per read, as any
line server) after noting when its caller's time is up, and the accept loop,
which wakes at least every :func:`~cofferd.rpc.transport.limits.scan_interval`,
shuts the reading side of each connection past its deadline; the thread then
sees EOF and closes it. (A poll before each read was one more GIL hand-off
per call.)

Stopping (:meth:`Server.request_stop`, safe from a signal handler): no new
connections or requests, in-flight calls get ``grace`` seconds, then they are
cancelled (their chunked I/O sees it within a chunk); a call still running
:data:`CANCEL_WAIT` s later (one waiting on a stalled upstream, say) is
answered ``SHUTTING_DOWN`` by the transport on its behalf and its socket is
shut, so every caller in flight gets its answer within ``grace +``
:data:`CANCEL_WAIT` s, never an EOF or a hang; :meth:`Server.shutdown` says
how many calls it left running, so the daemon does not close what they use.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coffer.protocol import MAX_FDS, MAX_LINE_BYTES, ErrorCode, fds_received
from cofferd.observe.calllog import CallLog
from cofferd.rpc.dispatch.context import Call, PeerCred
from cofferd.rpc.dispatch.dispatcher import Dispatcher, error_response
from cofferd.rpc.transport.limits import (
    IDLE_TIMEOUT,
    MAX_PER_UID,
    PARTIAL_LINE_TIMEOUT,
    RateLimitedLog,
    cap_parked,
    scan_interval,
)
from cofferd.rpc.transport.listen import PeerPolicy

if TYPE_CHECKING:
    from cofferd.rpc.dispatch.services import Services

log = logging.getLogger("cofferd.rpc")

#: Connections served at once; one more is told so and closed.
MAX_CONNECTIONS = 128
_RECV_BYTES = 64 * 1024
#: Room for a few more fds than allowed, so an excess is seen and refused, not lost.
_ANCILLARY = socket.CMSG_SPACE(8 * array.array("i").itemsize)
# A plain int: testing the IntFlag member costs more than the rest of the check.
_CTRUNC = int(socket.MSG_CTRUNC)
_NEWLINE = ord("\n")
# json.dumps builds a new encoder per call when given options; one serves all.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
#: Seconds cancelled calls get to answer before the transport answers for them.
CANCEL_WAIT = 2.0
_SHUTTING_DOWN = "cofferd is shutting down; try again once it is back"


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: PeerCred
    thread: threading.Thread | None = None
    #: The call in flight, until its answer is claimed: by its thread, or by
    #: the transport answering for it at the end of a stop (under ``lock``).
    call: Call | None = None
    #: The request line of the call in flight (its id, should the transport answer).
    line: bytes = b""
    pending: dict[int, list[int]] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    #: While the thread waits for the caller's bytes: (deadline, inside a line).
    #: One tuple, so the accept loop reads a consistent pair without a lock.
    waiting: tuple[float, bool] | None = None
    #: Why the accept loop cut the connection ("no request"...), once it did.
    expired: str | None = None
    #: Orders closing the socket (its thread) against shutting it (the accept
    #: loop, a stop): a closed fd number may already be another caller's.
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def shut(self, how: int) -> bool:
        """Shut the socket unless its thread closed it; False if it had."""
        with self.lock:
            if self.closed:
                return False
            with contextlib.suppress(OSError):  # the peer is gone already
                self.sock.shutdown(how)
            return True

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.sock.close()

    def claim(self, call: Call | None = None) -> tuple[Call, bytes] | None:
        """Take the right to answer the call in flight (``call``, or whichever).

        Its request line comes along (an answer needs its id); None if the
        answer was claimed already.
        """
        with self.lock:
            mine, line = self.call, self.line
            if mine is None or (call is not None and mine is not call):
                return None
            self.call, self.line = None, b""
            return mine, line


class Server:
    """Serves the dispatcher's methods on a listening socket until stopped."""

    def __init__(
        self,
        listener: socket.socket,
        dispatcher: Dispatcher,
        services: Services | None,
        *,
        unlink_path: Path | None = None,
        max_connections: int = MAX_CONNECTIONS,
        call_log: CallLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_timeout: float = IDLE_TIMEOUT,
        partial_line_timeout: float = PARTIAL_LINE_TIMEOUT,
        max_per_uid: int = MAX_PER_UID,
    ) -> None:
        self._listener = listener
        self._dispatcher = dispatcher
        self._services = services
        self._unlink_path = unlink_path
        self._max = max_connections
        self._max_per_uid = max_per_uid
        self._idle_timeout = idle_timeout
        self._partial_timeout = partial_line_timeout
        self._per_uid: dict[int, int] = {}
        self._accept_log = RateLimitedLog("accept failed", clock)
        self._busy_log = RateLimitedLog("refused a connection as busy", clock)
        self._clock = clock
        self._call_log = call_log
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._serial = 0
        self._policy = PeerPolicy.for_socket(listener)
        self._inode = _inode(unlink_path)

    # -- life cycle ---------------------------------------------------------

    def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Accept connections until :meth:`request_stop`; then return (call :meth:`shutdown`).

        Between accepts it cuts the connections whose caller's time is up.
        """
        scan = scan_interval(self._idle_timeout, self._partial_timeout)
        next_scan = self._clock() + scan
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            on_ready()
            while not self._stopping.is_set():
                # The timeout is a second line of defence; the wake-up socket is the first.
                for key, _ in sel.select(timeout=max(0.0, next_scan - self._clock())):
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif not self._stopping.is_set():
                        self._accept()
                now = self._clock()
                if now >= next_scan:
                    self._cut_expired(now)
                    next_scan = now + scan

    def request_stop(self) -> None:
        """Stop accepting; safe to call from a signal handler or any thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # the wake-up is already pending
            self._wake_w.send(b"x")

    def wakeup_fileno(self) -> int:
        """An fd for :func:`signal.set_wakeup_fd`.

        A signal may land on any thread; only the main thread runs Python's
        handler, and it may sit in ``select`` meanwhile. The C-level handler
        writes to this fd, which wakes that ``select``, whichever thread got it.
        """
        return self._wake_w.fileno()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if c.call is not None)

    def shutdown(self, grace: float) -> int:
        """Close the listener, let calls finish within ``grace`` s, answer for the rest.

        Returns how many calls were still running at the end: each was answered
        ``SHUTTING_DOWN`` by the transport and its socket shut, but its thread
        goes on, so what it uses must not be closed under it.
        """
        self._stopping.set()
        self._listener.close()
        # Only the file this server made: a successor may already have replaced it.
        if self._unlink_path is not None and _inode(self._unlink_path) == self._inode:
            self._unlink_path.unlink(missing_ok=True)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            if conn.call is None:
                # Idle: its thread wakes from recv and ends. Only the reading
                # side: a line that came just now still gets its answer.
                conn.shut(socket.SHUT_RD)
        deadline = self._clock() + grace
        busy = self._join(conns, deadline)
        if busy:
            log.warning("cancelling %d call(s) still running after %.1fs", len(busy), grace)
            for conn in busy:
                conn.cancel.set()
            busy = self._join(busy, self._clock() + CANCEL_WAIT)
        running = 0
        for conn in busy:
            claimed = conn.claim()
            if claimed is not None:
                running += 1
                self._answer_for(conn, *claimed)
            conn.shut(socket.SHUT_RDWR)  # e.g. stuck writing to a caller who does not read
        if running:
            log.warning(
                "answered %d call(s) still running %.1fs after the cancel: shutting down",
                running,
                CANCEL_WAIT,
            )
        self._wake_r.close()
        self._wake_w.close()
        return running

    def _answer_for(self, conn: _Conn, call: Call, line: bytes) -> None:
        """Answer ``SHUTTING_DOWN`` in place of a call that does not end."""
        try:
            request = json.loads(line)
        except ValueError:  # not JSON: it was answered already, as a parse error
            return
        if not isinstance(request, dict) or "id" not in request:
            return  # a notification: nobody waits for an answer
        answer = error_response(ErrorCode.SHUTTING_DOWN, _SHUTTING_DOWN, id_=request["id"])
        # Never blocks: a caller who does not read gets its EOF instead.
        _send_quietly(conn.sock, answer, flags=socket.MSG_DONTWAIT)
        if self._call_log is not None:
            what = f"error {int(ErrorCode.SHUTTING_DOWN)} (left running)"
            self._call_log.record(call.method or "-", what, conn.peer, 0.0)

    def _join(self, conns: list[_Conn], deadline: float) -> list[_Conn]:
        left = []
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - self._clock()))
                if conn.thread.is_alive():
                    left.append(conn)
        return left

    def _cut_expired(self, now: float) -> None:
        """Shut the reading side of each connection whose caller's time is up."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            waiting = conn.waiting
            if waiting is not None and waiting[0] <= now:
                conn.expired = "a partial request line" if waiting[1] else "no request"
                # Its thread sees EOF and closes it; an answer under way still goes out.
                conn.shut(socket.SHUT_RD)

    # -- connections --------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError as exc:  # e.g. EMFILE: keep serving the others
            self._accept_log.warn(exc.strerror or str(exc))
            time.sleep(0.05)
            return
        try:
            peer = PeerCred.of(sock)
        except OSError:
            sock.close()
            return
        if not self._policy.allows(peer):
            log.warning("refusing a connection from %s: not cofferd's user or group", peer)
            detail = "only root, cofferd's user and the socket's group may call cofferd"
            _send_quietly(sock, error_response(ErrorCode.UNAUTHORIZED, detail))
            sock.close()
            return
        conn = _Conn(sock, peer)
        refusal: str | None = None
        with self._lock:
            mine = self._per_uid.get(peer.uid, 0)
            if len(self._conns) >= self._max:
                refusal = f"cofferd serves at most {self._max} connections at once"
            elif mine >= self._max_per_uid:
                refusal = f"uid {peer.uid} already holds {mine} connections, the most one uid may"
            else:
                self._conns.add(conn)
                self._per_uid[peer.uid] = mine + 1
                self._serial += 1
                serial = self._serial
        if refusal is not None:
            self._busy_log.warn(f"the last from {peer}: {refusal}")
            busy = error_response(ErrorCode.BUSY, f"{refusal}; try again later")
            _send_quietly(sock, busy)
            sock.close()
            return
        conn.thread = threading.Thread(
            target=self._serve, args=(conn,), name=f"conn-{serial}", daemon=True
        )
        conn.thread.start()

    def _serve(self, conn: _Conn) -> None:
        try:
            self._read_loop(conn)
        except Exception:
            log.exception("connection from %s failed", conn.peer)
        finally:
            for fds in conn.pending.values():
                _close_all(fds)
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                left = self._per_uid.get(conn.peer.uid, 1) - 1
                if left > 0:
                    self._per_uid[conn.peer.uid] = left
                else:
                    self._per_uid.pop(conn.peer.uid, None)

    def _read_loop(self, conn: _Conn) -> None:
        buf = bytearray()
        lines_done = 0  # index of the line ``buf`` starts with
        # One receive buffer per connection: a fresh one per read costs more
        # than a small request's whole dispatch.
        chunk = memoryview(bytearray(_RECV_BYTES))
        idle_timeout, partial_timeout = self._idle_timeout, self._partial_timeout
        idle_since = self._clock()
        line_started = idle_since
        while True:
            # The accept loop cuts the connection once this passes (_cut_expired).
            due = idle_since + idle_timeout
            if buf:
                conn.waiting = (min(due, line_started + partial_timeout), True)
            else:
                conn.waiting = (due, False)
            try:
                n, ancdata, flags, _ = conn.sock.recvmsg_into([chunk], _ANCILLARY)
            except OSError:
                return
            fds = _fds_of(ancdata, flags) if ancdata or flags else []
            if not n:
                _close_all(fds)
                if conn.expired is not None:
                    why = conn.expired
                    log.info("closed the connection from %s: %s for too long", conn.peer, why)
                return
            if not buf and not fds and not conn.pending and chunk[n - 1] == _NEWLINE:
                # The common case: one whole request in one read, nothing parked.
                line = bytes(chunk[: n - 1])
                if b"\n" not in line:
                    lines_done += 1
                    if not self._answer(conn, line, []):
                        return
                    idle_since = self._clock()
                    continue
            if not buf:
                line_started = self._clock()
            buf += chunk[:n]
            if fds:
                # The kernel ends a read right after the data an fd came with, so
                # the fds belong to the line holding the last byte read.
                line_no = lines_done + buf.count(b"\n", 0, len(buf) - 1)
                conn.pending.setdefault(line_no, []).extend(fds)
            start = 0
            while (end := buf.find(b"\n", start)) >= 0:
                line_fds = conn.pending.pop(lines_done, [])
                lines_done += 1
                if end + 1 - start > MAX_LINE_BYTES:
                    _close_all(line_fds)
                    self._too_large(conn)
                    return
                if not self._answer(conn, bytes(buf[start:end]), line_fds):
                    return
                start = end + 1
                idle_since = line_started = self._clock()
            del buf[:start]
            if conn.pending:
                cap_parked(conn.pending)
            if len(buf) >= MAX_LINE_BYTES:
                self._too_large(conn)
                return

    def _too_large(self, conn: _Conn) -> None:
        detail = f"a request line may have at most {MAX_LINE_BYTES} bytes; closing the connection"
        if self._call_log is not None:
            self._call_log.record("-", f"error {int(ErrorCode.TOO_LARGE)}", conn.peer, 0.0)
        _send_quietly(conn.sock, error_response(ErrorCode.TOO_LARGE, detail))

    def _answer(self, conn: _Conn, line: bytes, fds: list[int]) -> bool:
        """Serve one line; False when the connection is done for."""
        if self._stopping.is_set():
            _close_all(fds)
            stopping = error_response(ErrorCode.SHUTTING_DOWN, _SHUTTING_DOWN)
            _send_quietly(conn.sock, stopping)
            return False
        call = Call(self._services, conn.peer, fds, conn.cancel, conn.sock)
        conn.waiting = None  # a call has no read deadline: its own limits hold
        # Kept for an answer on the call's behalf (shutdown); never longer than the call.
        conn.line, conn.call = line, call
        try:
            # The dispatcher's observer logs, counts and audits the call.
            response = self._dispatcher.handle(line, call)
        finally:
            call.close_fds()
        try:
            if conn.claim(call) is None:
                return False  # a stop answered for it already
            return self._respond(conn, call, response)
        finally:
            call.close_reply_fds()

    def _respond(self, conn: _Conn, call: Call, response: dict[str, Any] | None) -> bool:
        if call.hung_up:
            # Nobody is left to read an answer (docs/protocol.md: hang-up is local-only).
            return False
        if response is None:
            return not self._stopping.is_set()
        # Fds go only with a success: an error answer leaves nothing to close.
        fds = call.reply_fds if "error" not in response else []
        # Once stopping, a connection ends with its call rather than idle on.
        return _send_quietly(conn.sock, response, fds) and not self._stopping.is_set()


def _fds_of(ancdata: list[tuple[int, int, bytes]], flags: int) -> list[int]:
    if not ancdata and not flags & _CTRUNC:
        return []
    fds = fds_received(ancdata)
    for fd in fds:
        os.set_inheritable(fd, False)
    if flags & _CTRUNC:
        # More fds came than there was room for (the kernel closed the rest): a
        # placeholder makes the request carry too many, which it is refused for.
        fds.extend([-1] * (MAX_FDS + 1))
    return fds


def _inode(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):  # nothing left to release
                os.close(fd)


def _send_quietly(
    sock: socket.socket, response: dict[str, Any], fds: Sequence[int] = (), flags: int = 0
) -> bool:
    """Send one response line, ``fds`` riding on its first byte(s) (SCM_RIGHTS).

    A peer that hung up is not an error worth a log line. The fds are the
    caller's duplicates once sent; the sender still owns (and closes) its own.
    With ``MSG_DONTWAIT`` in ``flags``, what does not fit at once is dropped.
    """
    payload = _ENCODER.encode(response).encode() + b"\n"
    try:
        if fds:
            sent = socket.send_fds(sock, [payload], fds, flags | socket.MSG_NOSIGNAL)
            if sent < len(payload):
                sock.sendall(memoryview(payload)[sent:])
        elif flags:
            sock.send(payload, flags)
        else:
            sock.sendall(payload)
    except OSError:
        return False
    return True
