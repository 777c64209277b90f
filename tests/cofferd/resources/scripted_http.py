"""A tiny scripted HTTP server for the API client's own logic (retries, re-login, resume).

The real reference upstream (fixture ``upstream``) serves the end-to-end
tests; this one answers what a test scripts, including the faults the real
one never produces on purpose: 5xx bursts, a connection cut mid-body, silence.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients in these tests time out and hang up on purpose: that is no
        # server error. Anything else still gets the default report.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # send this many body bytes, then drop the connection
    delay: float = 0.0


Handler = Callable[[Seen], Reply]


class ScriptedServer:
    """Routes ``METHOD path-prefix`` to handlers; records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                else:
                    body = self.rfile.read(length)
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                with server._lock:
                    server.seen.append(seen)
                reply = server._route(seen)
                time.sleep(reply.delay)
                payload = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                if not isinstance(reply.body, bytes):
                    self.send_header("Content-Type", "application/json")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.cut_after is not None:
                    self.wfile.write(payload[: reply.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _serve

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def _route(self, seen: Seen) -> Reply:
        for prefix, handler in self.routes.items():
            method, _, path = prefix.partition(" ")
            if seen.method == method and seen.path.startswith(path):
                return handler(seen)
        return Reply(404, {"detail": "not found"})

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and s.path.startswith(path))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _read_chunked(rfile: Any) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline()
        if not line:
            raise ConnectionResetError("the client hung up mid-body")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def sequence(*replies: Reply) -> Handler:
    """A handler giving ``replies`` in turn, then repeating the last."""
    it = iter(replies)
    last = [replies[-1]]

    def handler(_: Seen) -> Reply:
        reply = next(it, None)
        if reply is None:
            return last[0]
        return reply

    return handler
