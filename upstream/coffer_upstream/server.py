"""The HTTP server, its request handler, and the janitor.

``http.server``'s threading server speaks HTTP/1.1 with keep-alive, a thread
per connection. Every answer carries a Content-Length, so a connection stays
usable after it, unless the request body could not be read to its end: then
the answer says ``Connection: close`` and the connection is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import struct
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

from coffer_upstream.api import Api
from coffer_upstream.cdn import Cdn
from coffer_upstream.config import ServerConfig
from coffer_upstream.datadir import DataDir
from coffer_upstream.errors import ClientGone, HttpError, bad_request
from coffer_upstream.leases import LeaseIssuer, LeaseKey
from coffer_upstream.ratelimit import LoginLimiter
from coffer_upstream.request import Request
from coffer_upstream.responses import FileResponse, JsonResponse, Response
from coffer_upstream.routing import routes
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store
from coffer_upstream.uploads import Publisher

log = logging.getLogger("coffer_upstream")

#: The body left unread after an answer is read and dropped up to this size,
#: to keep the connection; past it the connection is closed instead.
_DRAIN_LIMIT = 1024 * 1024


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many clients may connect at once (concurrent loads); 5 would drop SYNs.
    request_queue_size = 128

    def __init__(self, config: ServerConfig, host: str, port: int) -> None:
        config.check()
        self.config = config
        self.data = DataDir(config.data_dir)
        self.data.ensure()
        self.signer = Signer(self.data.load_secret())
        self.store = Store(self.data.db_path)
        self.publisher = Publisher(self.store, self.data, config.upload_ttl, self.signer.now)
        limiter = LoginLimiter(config.login_max_failures, config.login_window)
        self.lease_key = LeaseKey.load_or_create(self.data.lease_key_path)
        leases = LeaseIssuer(self.lease_key, config.lease_seconds)
        self.api = Api(
            config, self.store, self.signer, limiter, self.publisher, leases, self.base_url
        )
        self.cdn = Cdn(self.data, self.signer, self.publisher)
        self.router = routes(self.api, self.cdn)
        # No PUT is in flight before the server starts: any temp file is debris.
        for temp in self.data.temp_paths():
            temp.unlink(missing_ok=True)
        self.publisher.sweep()
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._sweep_loop, name="janitor", daemon=True)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self) -> str:
        return (self.config.public_url or self.url).rstrip("/")

    # shutdown() waits up to one poll interval: short, so stopping is quick.
    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self._janitor.start()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._stop.set()

    def server_close(self) -> None:
        super().server_close()
        self._stop.set()
        if self._janitor.is_alive():
            self._janitor.join()
        self.store.close()

    def _sweep_loop(self) -> None:
        # Often enough that an upload is gone soon after it expires.
        interval = min(60.0, max(0.2, self.config.upload_ttl / 4))
        while not self._stop.wait(interval):
            try:
                self.publisher.sweep()
            except (OSError, sqlite3.Error) as exc:
                log.warning("sweep failed: %s", exc)


class Handler(BaseHTTPRequestHandler):
    server: UpstreamServer
    protocol_version = "HTTP/1.1"
    server_version = "coffer-upstream"
    # Small JSON answers go out at once instead of waiting on a delayed ACK.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # A silent client cannot hold a thread for ever.
        self.connection.settimeout(self.server.config.idle_timeout)

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _handle(self) -> None:
        started = time.monotonic()
        request: Request | None = None
        try:
            request, segments = self._parse_target()
            endpoint, request.params = self.server.router.match(self.command, segments)
            response = endpoint(request, **request.params)
        except HttpError as exc:
            response = JsonResponse(exc.status, {"detail": exc.detail}, exc.headers)
        except sqlite3.Error as exc:
            log.warning("storage error: %s", exc)
            response = JsonResponse(503, {"detail": "storage busy, retry"}, {"Retry-After": "1"})
        except ClientGone:
            self.close_connection = True
            self._log(request, 0, 0, started)
            return
        except Exception:
            log.exception("internal error on %s %s", self.command, _path(self.path))
            response = JsonResponse(500, {"detail": "internal error"})
        if request is not None and not self._finish_body(request):
            self.close_connection = True
        sent = self._send(response)
        self._log(request, response.status, sent, started)

    def _parse_target(self) -> tuple[Request, list[str]]:
        """The request without its params yet, and the percent-decoded path segments."""
        try:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query, max_num_fields=16))
            segments = [unquote(s, errors="strict") for s in url.path.split("/")[1:]]
        except ValueError as exc:
            # Undecodable escapes, too many query fields, a bad port in an absolute URL.
            raise bad_request("malformed request target") from exc
        request = Request(
            method=self.command,
            path=url.path,
            params={},
            query=query,
            headers=self.headers,
            rfile=self.rfile,
            max_json_bytes=self.server.config.max_json_bytes,
        )
        return request, segments

    def _finish_body(self, request: Request) -> bool:
        """Read what is left of the request body; False if the connection cannot be reused."""
        try:
            body = request.body()
            if body.done or not body.present:
                return True
            if body.length is not None and body.length - body.received > _DRAIN_LIMIT:
                return False
            buf = memoryview(bytearray(64 * 1024))
            drained = 0
            while n := body.readinto(buf):
                drained += n
                if drained > _DRAIN_LIMIT:
                    return False
        except (HttpError, ClientGone):
            return False
        return True

    def _send(self, response: Response) -> int:
        try:
            if isinstance(response, FileResponse):
                return self._send_file(response)
            return self._send_json(response)
        except OSError:
            self.close_connection = True
            return 0

    def _send_json(self, response: JsonResponse) -> int:
        payload = json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers(response.headers)
        if self.command != "HEAD":
            self.wfile.write(payload)
        return len(payload)

    def _send_file(self, response: FileResponse) -> int:
        with response.file as f:
            self.send_response(response.status)
            self.send_header("Content-Length", str(response.count))
            self._common_headers(response.headers)
            if self.command == "HEAD" or response.count == 0:
                return 0
            sent = self._sendfile(f, response.offset, response.count)
            if sent != response.count:
                # The file shrank under us: the framing is broken, so is the connection.
                self.close_connection = True
            return sent

    def _sendfile(self, f: BinaryIO, offset: int, count: int) -> int:
        """Send ``count`` bytes of ``f`` from ``offset`` with as few sendfile calls as may be.

        socket.sendfile on a socket with a timeout waits in select() between
        calls sized by the free send buffer; a blocking socket with a kernel
        send timeout lets one call move as much as the kernel will (some 25%
        faster over loopback), and a stuck client still times out.
        """
        sock = self.connection
        timeout = self.server.config.idle_timeout
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(sock.fileno(), f.fileno(), offset + sent, count - sent)
                if n == 0:
                    break
                sent += n
        except OSError:
            # The client hung up or stopped reading: what it got is logged.
            self.close_connection = True
        finally:
            sock.settimeout(timeout)
        return sent

    def _common_headers(self, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    # http.server's own errors (bad request line, headers too long, ...) as JSON too.
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Its messages quote the raw request line, which may hold a signed URL.
        detail = (message or HTTPStatus(code).phrase).split(" (")[0]
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # Unparsable lines count as HTTP/0.9, whose answers have no status
            # line; HTTP/0.9 is not spoken here, so answer as HTTP/1.0.
            self.request_version = "HTTP/1.0"
        with contextlib.suppress(OSError):
            self._send_json(JsonResponse(code, {"detail": detail}))
        log.info("%s - %d %s", self.client_address[0], code, detail)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _log writes one line per request, without query strings

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.client_address[0], format % args)

    def _log(self, request: Request | None, status: int, sent: int, started: float) -> None:
        user = request.user if request is not None and request.user else "-"
        log.info(
            "%s %s %s %s %d %d %.1fms",
            self.client_address[0],
            user,
            self.command,
            _path(self.path),
            status,
            sent,
            (time.monotonic() - started) * 1000,
        )


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _path(target: str) -> str:
    """The request path without its query: presigned signatures stay out of the log."""
    return repr(target.split("?", 1)[0])[1:-1][:300]


def make_server(config: ServerConfig, host: str, port: int) -> UpstreamServer:
    return UpstreamServer(config, host, port)
