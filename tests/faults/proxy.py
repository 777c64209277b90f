"""A fault-injecting TCP proxy for the fault suite: threads and sockets, nothing else.

It sits between cofferd and an HTTP server (the reference upstream's resource
API, or its CDN URLs through ``--public-url``) and does to the server's
answers what a bad network does. The fault is read when a connection is
accepted; setting :attr:`FaultProxy.fault` closes the connections open (a
client's kept-alive ones would skip it) so the next ones see it. ``Fault()``
(the default) passes bytes through untouched.

- ``reset_at=N``: after N bytes of the answer, a TCP reset (``SO_LINGER`` 0).
- ``truncate_at=N``: after N bytes, a clean close (FIN): an answer cut short.
- ``stall``: the request goes through, the answer never comes (until closed).
- ``flip_at=N``: one bit of byte N of the answer flipped.
- ``status=503``: no server at all; every request is answered with that status.
- ``trickle=S``: the answer one byte every S seconds (each read gets one byte).
- ``trickle_request=S``: the request one byte every S seconds (a server that
  takes an upload's body a byte per read).
- ``once``: the next connection only; later ones pass (a transient fault).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    reset_at: int | None = None
    truncate_at: int | None = None
    stall: bool = False
    flip_at: int | None = None
    status: int | None = None
    trickle: float | None = None
    trickle_request: float | None = None
    #: Only the next connection gets it; later ones pass (a transient fault).
    once: bool = False


class FaultProxy:
    """Listens on 127.0.0.1; forwards to ``target`` (host, port), set now or later."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self._fault = Fault()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True).start()

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        self._fault = fault
        self.drop_all()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            socks = list(self._open)
        for s in socks:
            _close(s)

    def drop_all(self) -> None:
        """Close every connection in flight (a stall ends here)."""
        with self._lock:
            socks = list(self._open)
        for s in socks:
            _close(s)
        with self._lock:
            self._open.difference_update(socks)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            fault = self._fault
            if fault.once:
                self._fault = Fault()
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._open.add(s)

    def _serve(self, client: socket.socket, fault: Fault) -> None:
        self._track(client)
        if fault.status is not None:
            self._answer_status(client, fault.status)
            return
        assert self.target is not None, "the proxy has no target yet"
        try:
            server = socket.create_connection(self.target, timeout=30)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        self._track(server)
        threading.Thread(
            target=_pump, args=(client, server, fault.trickle_request), daemon=True
        ).start()
        if fault.stall:
            # Hold the answer: read and drop it, the caller hears nothing.
            with contextlib.suppress(OSError):
                while server.recv(65536):
                    pass
            _close(client)
            return
        self._forward_answer(server, client, fault)

    def _forward_answer(self, server: socket.socket, client: socket.socket, fault: Fault) -> None:
        sent = 0
        try:
            while chunk := server.recv(65536):
                data = bytearray(chunk)
                if fault.flip_at is not None and sent <= fault.flip_at < sent + len(data):
                    data[fault.flip_at - sent] ^= 0x01
                cut = fault.reset_at if fault.reset_at is not None else fault.truncate_at
                if cut is not None and sent + len(data) >= cut:
                    client.sendall(data[: cut - sent])
                    if fault.reset_at is not None:
                        _reset(client)
                    else:
                        _close(client)
                    _drain_close(server)
                    return
                if fault.trickle is not None:
                    for i in range(len(data)):
                        client.sendall(data[i : i + 1])
                        if self._closed.wait(fault.trickle):
                            break
                else:
                    client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        _close(client)
        _close(server)

    @staticmethod
    def _answer_status(client: socket.socket, status: int) -> None:
        # One answer per request on a kept connection: read a head, answer, repeat.
        buf = b""
        body = b'{"error":"fault proxy"}'
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = client.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                    if name.strip().lower() == b"transfer-encoding":
                        # A streamed body (a PUT of a big part): answer and close.
                        length = -1
                if length > 0:
                    while len(buf) < length:
                        chunk = client.recv(65536)
                        if not chunk:
                            raise OSError("closed")
                        buf += chunk
                    buf = buf[length:]
                client.sendall(
                    b"HTTP/1.1 %d Fault\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                if length < 0:
                    break
        except OSError:
            pass
        _close(client)


def _pump(src: socket.socket, dst: socket.socket, trickle: float | None = None) -> None:
    try:
        while chunk := src.recv(1 if trickle is not None else 65536):
            dst.sendall(chunk)
            if trickle is not None:
                time.sleep(trickle)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _drain_close(s: socket.socket) -> None:
    # Closing with unread bytes would reset the server, which then logs a
    # traceback: read its answer to the end first (bounded), then close.
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while s.recv(65536):
            pass
    _close(s)


def _reset(s: socket.socket) -> None:
    # SHUT_RD wakes the pump thread blocked in recv on this socket (a close
    # alone would wait for it); the last reference gone, linger 0 sends the RST.
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        s.close()


def _close(s: socket.socket) -> None:
    # shutdown first: another thread may block in recv on it, and a close
    # alone sends nothing until that recv returns.
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
