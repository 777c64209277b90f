"""A tiny real Unix-socket server speaking newline JSON, for the client's pure wire logic.

Each test gives a handler ``(request, fds, conn) -> response | None``; the
server reads one line at a time (with its SCM_RIGHTS fds), calls the handler
and writes back what it returns (a dict as a JSON line, bytes raw, None
nothing). It stands in for cofferd only where a test needs an answer cofferd
would never give (garbage, a wrong id, silence); everything else runs against
the real daemon.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any], list[int], socket.socket], "dict[str, Any] | bytes | None"]


def result(request: dict[str, Any], value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request["id"], "result": value}


def error(request: dict[str, Any], code: int, detail: str, message: str = "Err") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request["id"],
        "error": {"code": code, "message": message, "data": {"detail": detail}},
    }


class WireServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _connection(self, conn: socket.socket) -> None:
        buf = b""
        fds: list[int] = []
        with contextlib.suppress(OSError), conn:
            while True:
                while b"\n" not in buf:
                    anc = array.array("i")
                    data, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(16))
                    for level, kind, payload in ancdata:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            anc.frombytes(payload[: len(payload) - len(payload) % anc.itemsize])
                    fds.extend(anc)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\n", 1)
                request = json.loads(line)
                self.requests.append(request)
                try:
                    answer = self.handler(request, fds, conn)
                finally:
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    fds = []
                if isinstance(answer, dict):
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                elif isinstance(answer, bytes):
                    conn.sendall(answer)

    def close(self) -> None:
        # shutdown() wakes the accept and the reads under way (close() alone
        # does not): no thread of this server outlives it, holding an fd
        # number that a later test's socket may get.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)


@contextlib.contextmanager
def serving(path: Path, handler: Handler) -> Iterator[WireServer]:
    server = WireServer(path, handler)
    try:
        yield server
    finally:
        server.close()
