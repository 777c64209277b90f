"""``coffer-upstream serve``: the app under uvicorn, on a socket bound here.

The socket is bound before uvicorn starts, so ``--port 0`` works and the URL
printed (``listening on http://HOST:PORT``, the first stdout line) is the real
one; connections made from then on wait in its backlog until served. With
``--workers N`` uvicorn's supervisor runs N processes on that socket, each
building its app from the config in the environment.

What bounds a client is uvicorn's: ``timeout_keep_alive`` (an idle kept-alive
connection, and with :mod:`protocol` the time a request's head may take),
``limit_concurrency`` (connections and requests at once; past it
503), ``h11_max_incomplete_event_size`` (the request line and headers), and
the app's own caps on bodies. SIGTERM or SIGINT stops it gracefully (exit 0).
"""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from coffer_upstream.app import CONFIG_ENV, config_to_environment, create_app
from coffer_upstream.config import ServerConfig
from coffer_upstream.protocol import HeadTimeoutH11Protocol

#: Connections and requests at once per worker; past it uvicorn answers 503.
LIMIT_CONCURRENCY = 1000
#: Request line and headers, in bytes.
MAX_HEADER_BYTES = 64 * 1024
#: Seconds a worker lets requests under way finish when told to stop (a
#: download is cut then: the client resumes it from another replica).
GRACEFUL_SECONDS = 3


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: ServerConfig, sock: socket.socket, workers: int, forwarded: str | None) -> int:
    common = {
        # h11, not httptools: h11 bounds the request line and headers
        # (h11_max_incomplete_event_size); httptools takes any size. Our
        # subclass bounds the time a request's head may take too.
        "http": HeadTimeoutH11Protocol,
        "timeout_keep_alive": max(1, int(config.idle_timeout)),
        "limit_concurrency": LIMIT_CONCURRENCY,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "proxy_headers": forwarded is not None,
        "forwarded_allow_ips": forwarded or "",
        "access_log": False,
        "log_config": None,
        "server_header": False,
    }
    # Our own handlers first: a signal before uvicorn has its own stops it as
    # soon as it runs; and uvicorn, which re-raises the signal it caught once it
    # has stopped, restores these before it does, so the process exits 0.
    stop = _Stop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    # What expired while no replica ran is swept before the first request.
    app = create_app(config)
    app.state.janitor.sweep()
    if workers == 1:
        print(f"listening on {url_of(sock)}", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, **common))  # type: ignore[arg-type]
        stop.server = server
        if not stop.signalled:
            server.run(sockets=[sock])
        return 0
    os.environ[CONFIG_ENV] = config_to_environment(config)
    uv_config = uvicorn.Config(
        "coffer_upstream.app:from_environment",
        factory=True,
        workers=workers,
        fd=sock.fileno(),
        **common,  # type: ignore[arg-type]
    )
    print(f"listening on {url_of(sock)}", flush=True)
    Multiprocess(uv_config, sockets=[sock]).run()
    return 0


class _Stop:
    """The handler of SIGTERM and SIGINT while uvicorn has none."""

    def __init__(self) -> None:
        self.signalled = False
        self.server: uvicorn.Server | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        if self.server is not None:
            self.server.should_exit = True
