"""The coffer client library: talk to cofferd over its Unix socket.

Standard library only, so any local process can use it without the daemon's
dependencies. The wire protocol (docs/protocol.md) is JSON-RPC 2.0, one JSON
object per line; big payloads travel through a pipe whose end is passed with
the request as SCM_RIGHTS ancillary data, never as JSON.

::

    with Client() as c:                      # COFFER_SOCKET or /run/coffer/cofferd.sock
        c.login("me@example.com", password)
        with open("model.bin", "wb") as out:
            c.load("model.bin", "models", out)

The exceptions live in :mod:`coffer.errors` and are re-exported here.
"""

from __future__ import annotations

import array
import base64
import contextlib
import json
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, BinaryIO

from coffer.errors import (
    BadRequest,
    CofferRPCError,
    Conflict,
    DaemonBusy,
    DaemonTimeout,
    DaemonUnavailable,
    InternalError,
    InvalidParams,
    MethodNotFound,
    NotFound,
    ProtocolError,
    ShuttingDown,
    StateUnwritable,
    TooLarge,
    Unauthorized,
    Untrusted,
    UpstreamBadData,
    UpstreamError,
    UpstreamUnavailable,
    daemon_unavailable,
    error_from_wire,
)
from coffer.memfd import Memfd
from coffer.protocol import DEFAULT_SOCKET, MAX_FDS, MAX_LINE_BYTES, fds_received
from coffer.streams import Drain, Progress, Pump, Stream, remaining

#: The folder resources live in unless one is named.
DEFAULT_FOLDER = "models"
#: Seconds of silence (no byte from the daemon, no progress on a pipe) before giving up.
DEFAULT_TIMEOUT = 120.0
#: Tries of ``load_memfd`` when new versions keep changing the size between stat and load.
MEMFD_TRIES = 3

# A response line carries at most an inline payload of the daemon's cap, which
# is well under the request line limit; allow the same for responses.
_MAX_RESPONSE_BYTES = MAX_LINE_BYTES
# How often a wait wakes up to check the silence deadline.
_TICK = 0.5
# Room for the fds an answer may carry (one today), and a few more to notice excess.
_ANCILLARY = socket.CMSG_SPACE(8 * array.array("i").itemsize)


def default_socket_path(environ: Mapping[str, str] | None = None) -> str:
    """``COFFER_SOCKET`` if set and not empty, else the packaged path."""
    env = os.environ if environ is None else environ
    return env.get("COFFER_SOCKET") or DEFAULT_SOCKET


class Client:
    """A connection to cofferd; calls run one at a time (threads are serialised).

    The socket is opened on the first call and kept for the next ones; a
    connection the daemon closed between calls is reopened once, transparently.
    ``timeout`` is the number of seconds of silence tolerated: connecting,
    waiting for an answer, or a stream that stops moving.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.socket_path = os.fspath(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._scanned = 0
        self._next_id = 1
        self._lock = threading.Lock()
        # Fds that came with the response being read (SCM_RIGHTS); ours to close.
        self._fds: list[int] = []

    # -- connection ----------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        sock, self._sock = self._sock, None
        self._buf.clear()
        self._scanned = 0
        self._close_received()
        if sock is not None:
            sock.close()

    def _close_received(self) -> None:
        while self._fds:
            with contextlib.suppress(OSError):  # nothing left to release
                os.close(self._fds.pop())

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            # Between calls cofferd sends nothing, so a kept connection that
            # reads as ready holds an EOF or a reset: start a new one.
            # poll, not select: select() refuses fds >= 1024 (FD_SETSIZE).
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            if not poller.poll(0):
                return self._sock
            self.close()
        deadline = time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except BlockingIOError as exc:
                # A Unix socket's full accept queue says EAGAIN instead of waiting.
                sock.close()
                if time.monotonic() > deadline:
                    raise daemon_unavailable(self.socket_path, TimeoutError()) from exc
                time.sleep(0.01)
                continue
            except OSError as exc:
                sock.close()
                raise daemon_unavailable(self.socket_path, exc) from exc
            except BaseException:
                sock.close()
                raise
            self._sock = sock
            return sock

    # -- the generic call ----------------------------------------------------

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, fds: Iterable[int] = ()
    ) -> Any:
        """Call ``method`` with named ``params``, passing ``fds`` along; return its result.

        The fds are duplicated into the daemon by the kernel; the caller keeps
        (and must close) its own copies. Raises a :class:`CofferRPCError`
        subclass for an error answer or when the daemon cannot be reached.
        """
        result, received = self.call_returning_fds(method, params, fds)
        for fd in received:
            os.close(fd)  # a method that answers with fds was called without wanting them
        return result

    def call_returning_fds(
        self, method: str, params: Mapping[str, Any] | None = None, fds: Iterable[int] = ()
    ) -> tuple[Any, list[int]]:
        """Like :meth:`call`, and the fds that came with the answer, now the caller's to close.

        An error answer never carries fds; anything that came with one is closed.
        """
        fd_list = list(fds)
        with self._lock:
            self._close_received()
            reused = self._sock is not None
            request_id = self._send(method, params, fd_list)
            try:
                line = self._wait_line(None)
            except _Unread:
                if not reused:
                    raise
                # The daemon closed a kept connection without reading the
                # request (a reset says so), so it never ran: send it again.
                request_id = self._send(method, params, fd_list)
                line = self._wait_line(None)
            try:
                result = self._finish(request_id, line)
            except BaseException:
                self._close_received()
                raise
            received, self._fds = self._fds, []
            return result, received

    def _send(self, method: str, params: Mapping[str, Any] | None, fds: list[int]) -> int:
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} file descriptor(s) per request")
        request_id = self._next_id
        self._next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            request["params"] = dict(params)
        line = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        if len(line) > MAX_LINE_BYTES:
            raise TooLarge(
                f"the request is {len(line)} bytes, over the protocol's line limit of "
                f"{MAX_LINE_BYTES}; pass big payloads through a file descriptor"
            )
        # A peer that hung up since the last call refuses the whole message,
        # so nothing was delivered and sending it again on a new connection is safe.
        fresh = self._sock is None
        try:
            self._sendmsg(self._connect(), line, fds)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            if fresh:
                raise DaemonUnavailable("cofferd closed the connection") from exc
            try:
                self._sendmsg(self._connect(), line, fds)
            except OSError as exc2:
                self.close()
                raise DaemonUnavailable(f"cannot send to cofferd: {exc2.strerror}") from exc2
        except TimeoutError as exc:
            self.close()
            raise DaemonTimeout(
                f"cofferd did not take the request within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            self.close()
            raise DaemonUnavailable(f"cannot send to cofferd: {exc.strerror}") from exc
        return request_id

    @staticmethod
    def _sendmsg(sock: socket.socket, line: bytes, fds: list[int]) -> None:
        # MSG_NOSIGNAL: a daemon that went away is an EPIPE error, not a SIGPIPE
        # killing the caller. The fds ride on the first chunk only.
        sent = 0
        if fds:
            sent = socket.send_fds(sock, [line], fds, socket.MSG_NOSIGNAL)
        if sent < len(line):
            sock.sendall(memoryview(line)[sent:], socket.MSG_NOSIGNAL)

    def _finish(self, request_id: int, line: bytes) -> Any:
        try:
            response = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.close()
            raise ProtocolError("cofferd sent a line that is not JSON") from exc
        if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
            self.close()
            raise ProtocolError("cofferd sent something that is not a JSON-RPC 2.0 response")
        if "error" in response:
            error = error_from_wire(response["error"])
            # After these the daemon closes the connection or we lost track of it.
            if response.get("id") is None or isinstance(error, TooLarge | ProtocolError):
                self.close()
            raise error
        if response.get("id") != request_id or "result" not in response:
            self.close()
            raise ProtocolError("cofferd answered a different request")
        return response["result"]

    # -- reading lines -------------------------------------------------------

    def _pop_line(self) -> bytes | None:
        i = self._buf.find(b"\n", self._scanned)
        if i < 0:
            self._scanned = len(self._buf)
            if self._scanned > _MAX_RESPONSE_BYTES:
                self.close()
                raise ProtocolError("cofferd sent a response line over the protocol's limit")
            return None
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        self._scanned = 0
        return line

    def _feed(self) -> None:
        """Read what the socket has (it is readable) into the line buffer."""
        assert self._sock is not None
        try:
            # CLOEXEC at once: a child spawned meanwhile must not inherit them.
            chunk, ancdata, flags, _ = self._sock.recvmsg(
                256 * 1024, _ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
            self._fds.extend(fds_received(ancdata))
            if flags & socket.MSG_CTRUNC:
                self.close()
                raise ProtocolError("cofferd sent more fds with an answer than a client takes")
        except ConnectionResetError as exc:
            self.close()
            raise _Unread("cofferd closed the connection without reading the request") from exc
        except OSError as exc:
            self.close()
            raise DaemonUnavailable(f"lost the connection to cofferd: {exc.strerror}") from exc
        if not chunk:
            self.close()
            raise DaemonUnavailable("cofferd closed the connection before answering")
        self._buf += chunk

    def _wait_line(self, stream: Stream | None) -> bytes:
        """Wait for the next response line, moving ``stream`` along meanwhile.

        Gives up after ``timeout`` seconds in which neither the socket nor the
        stream moved.
        """
        try:
            return self._wait_line_or_fail(stream)
        except BaseException:
            # Whatever stopped the wait (an error, KeyboardInterrupt), the answer
            # may still come: only a new connection is known to be in step.
            self.close()
            raise

    def _wait_line_or_fail(self, stream: Stream | None) -> bytes:
        line = self._pop_line()
        if line is not None and stream is None:
            return line
        sock = self._sock
        assert sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            if stream is not None:
                stream.register(sel)
            last = time.monotonic()
            while line is None or (stream is not None and stream.pending_after_answer()):
                events = sel.select(_TICK)
                if not events:
                    if time.monotonic() - last > self.timeout:
                        self.close()
                        raise DaemonTimeout(f"cofferd went silent for {self.timeout:g} s")
                    continue
                last = time.monotonic()
                for key, _ in events:
                    if key.fileobj is sock:
                        if line is None:
                            self._feed()
                            line = self._pop_line()
                            if line is not None and stream is not None:
                                stream.answered(sel, _is_error(line))
                        else:
                            sel.unregister(sock)
                    elif stream is not None and stream.open:
                        # (The answer, handled just before, may have closed it.)
                        stream.step(sel)
        return line

    # -- helpers -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "version": ...}`` when the daemon serves."""
        return _object(self.call("health", {}))

    def status(self) -> dict[str, Any]:
        """Whether credentials are set, the model cache dir, the upstream, unlock state."""
        return _object(self.call("status", {}))

    def login(self, email: str, password: str) -> dict[str, Any]:
        """Give the daemon credentials; raises :class:`Unauthorized` if the upstream refuses."""
        return _object(self.call("login", {"email": email, "password": password}))

    def enroll(self, token: str) -> dict[str, Any]:
        """Enroll the daemon's device key with an enrollment token: its device id and role.

        Raises :class:`Unauthorized` if the upstream refuses the token (unknown, spent, expired).
        """
        return _object(self.call("enroll", {"token": token}))

    def logout(self) -> dict[str, Any]:
        """Make the daemon drop its login, token and offline records and leases."""
        return _object(self.call("logout", {}))

    def trust_init(self, root: str, *, replace: bool = False) -> dict[str, Any]:
        """Pin ``root`` (root.json's text) as the root of trust; another only with ``replace``."""
        return _object(self.call("trust.init", {"root": root, "replace": replace}))

    def trust_status(self) -> dict[str, Any]:
        """The trust mode, the pinned root, the last refresh and each top-level role."""
        return _object(self.call("trust.status", {}))

    def trust_metadata(self, role: str = "publishers") -> dict[str, Any]:
        """``{"targets", "role"}``: the verified targets.json, ``role``'s current text or None."""
        return _object(self.call("trust.metadata", {"role": role}))

    def trust_publish(self, role: str, metadata: str) -> dict[str, Any]:
        """Publish ``role``'s signed metadata (JSON text) via cofferd: ``{"role", "version"}``."""
        return _object(self.call("trust.publish", {"role": role, "metadata": metadata}))

    def unlock(self, email: str, password: str) -> dict[str, Any]:
        """Start unlocking the device's Docker image archive; poll :meth:`unlock_status`."""
        return _object(self.call("unlock", {"email": email, "password": password}))

    def unlock_status(self) -> dict[str, Any]:
        """The unlock workflow's state, error and progress."""
        return _object(self.call("unlock_status", {}))

    def load(
        self, name: str, folder: str, out: BinaryIO, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Write the plaintext of ``folder/name`` into ``out``; return the result.

        The daemon writes into a pipe this method drains into ``out``. On an
        error the bytes already written to ``out`` are incomplete and must be
        discarded (write to a temp file and rename on success).
        """
        return self._stream("load", {"filename": name, "folder": folder}, Drain(out, progress))

    def upload(
        self,
        name: str,
        folder: str,
        src: BinaryIO,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Publish what ``src`` holds up to EOF as ``folder/name``; return the result.

        ``size`` is the number of bytes ``src`` will give; the daemon publishes
        only if exactly that many came. It is taken from the file when ``src``
        is a regular file and ``size`` is not given.
        """
        if size is None:
            size = remaining(src)
        params: dict[str, Any] = {"filename": name, "folder": folder}
        if size is not None:
            params["size"] = size
        return self._stream("upload", params, Pump(src, size, progress))

    def load_bytes(self, name: str, folder: str = DEFAULT_FOLDER) -> bytes:
        """The plaintext of ``folder/name`` inline: up to the daemon's inline cap, else TooLarge."""
        result = _object(self.call("load", {"filename": name, "folder": folder}))
        try:
            return base64.b64decode(result["data"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError("cofferd's load result has no valid base64 data") from exc

    def stat(self, name: str, folder: str = DEFAULT_FOLDER) -> dict[str, Any]:
        """The version and plaintext size a load of ``folder/name`` would deliver now."""
        return _object(self.call("stat", {"filename": name, "folder": folder}))

    def load_memfd(self, name: str, folder: str = DEFAULT_FOLDER) -> Memfd:
        """The plaintext of ``folder/name`` in a sealed memfd: nothing written to any disk.

        The memfd is made here, of the size ``stat`` answers, its pages
        allocated by this process (so charged to its memory cgroup, not to
        cofferd's); cofferd fills and seals it. It is checked (all four seals,
        the size announced) before it is trusted; :class:`ProtocolError`
        otherwise. A new version published between the two calls makes
        cofferd refuse the size: asked again, a few times. Close the returned
        :class:`~coffer.memfd.Memfd` when done.
        """
        params = {"filename": name, "folder": folder}
        size = _size_of(self.stat(name, folder))
        for attempt in range(MEMFD_TRIES):
            memfd = Memfd.create(f"coffer:{folder}/{name}", size)
            try:
                self._fill_memfd(params, memfd)
            except TooLarge:
                memfd.close()
                raise
            except BadRequest:
                memfd.close()
                now = _size_of(self.stat(name, folder))
                if now == size or attempt + 1 == MEMFD_TRIES:
                    raise
                size = now  # a new version came meanwhile: its size
            except BaseException:
                memfd.close()
                raise
            else:
                return memfd
        raise AssertionError("unreachable")

    def _fill_memfd(self, params: dict[str, str], memfd: Memfd) -> None:
        result = _object(self.call("load_memfd", params, [memfd.fd]))
        if result.get("size") != memfd.size:
            raise ProtocolError(
                f"cofferd's load_memfd answered {result.get('size')!r} bytes, not {memfd.size}"
            )
        memfd.check_sealed()

    def upload_bytes(self, name: str, folder: str, data: bytes) -> dict[str, Any]:
        """Publish ``data`` inline as ``folder/name`` (capped like :meth:`load_bytes`)."""
        params = {"filename": name, "folder": folder, "data": base64.b64encode(data).decode()}
        return _object(self.call("upload", params))

    def _stream(self, method: str, params: dict[str, Any], stream: Stream) -> dict[str, Any]:
        with self._lock:
            try:
                request_id = self._send(method, params, [stream.theirs])
            finally:
                # The daemon holds its own copy now (or never will): without
                # ours gone, the pipe would never see EOF / EPIPE.
                stream.close_theirs()
            try:
                # On any failure _wait_line has closed the socket already: the
                # pipe closes after it, so a cut upload never looks complete.
                line = self._wait_line(stream)
            finally:
                stream.close()
            result = _object(self._finish(request_id, line))
            if isinstance(stream, Drain) and result.get("size") not in (None, stream.done):
                raise ProtocolError(
                    f"cofferd reported {result['size']} bytes but sent {stream.done}"
                )
            return result


def _size_of(result: dict[str, Any]) -> int:
    size = result.get("size")
    if type(size) is not int or size < 0:
        raise ProtocolError("cofferd's stat result has no size")
    return size


class _Unread(DaemonUnavailable):
    """The connection was reset: the daemon closed it with our request unread."""


def _is_error(line: bytes) -> bool:
    try:
        response = json.loads(line)
    except ValueError:
        return True
    return not isinstance(response, dict) or "error" in response


def _object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise ProtocolError("cofferd's result is not a JSON object")
    return result


__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_TIMEOUT",
    "BadRequest",
    "Client",
    "CofferRPCError",
    "Conflict",
    "DaemonBusy",
    "DaemonTimeout",
    "DaemonUnavailable",
    "InternalError",
    "InvalidParams",
    "Memfd",
    "MethodNotFound",
    "NotFound",
    "Progress",
    "ProtocolError",
    "ShuttingDown",
    "StateUnwritable",
    "TooLarge",
    "Unauthorized",
    "Untrusted",
    "UpstreamBadData",
    "UpstreamError",
    "UpstreamUnavailable",
    "default_socket_path",
]
