"""``cofferd``: the daemon's entry point.

Builds the settings once (defaults ← config file ← environment, with
``--socket`` last), takes the socket systemd passes or binds its own, serves
until SIGTERM/SIGINT, then stops cleanly and exits 0. A socket it cannot
serve on is a one-line error and exit status 1; bad settings exit 2.

A stop is bounded: in-flight calls get ``shutdown_grace`` s, then are
cancelled, and whatever still runs :data:`~cofferd.rpc.transport.server.CANCEL_WAIT`
s later is answered ``SHUTTING_DOWN`` by the transport and left behind; the
process then ends at once (:func:`_end`), ``shutdown_grace + CANCEL_WAIT`` s
after the signal at most, well inside the unit's ``TimeoutStopSec``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType
from typing import NoReturn

from cofferd import __version__
from cofferd.app import App, build_dispatcher
from cofferd.errors import ListenError, SettingsError
from cofferd.notify import Notifier
from cofferd.observe.audit import AuditLog
from cofferd.observe.calllog import CallLog
from cofferd.observe.journal import JournalSender, open_sink
from cofferd.observe.metrics import TextfileWriter
from cofferd.rpc.transport.listen import bind_unix, systemd_socket
from cofferd.rpc.transport.server import Server
from cofferd.settings import Settings

log = logging.getLogger("cofferd")

# journald reads a "<N>" prefix as the syslog priority of the line.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, no timestamp: journald adds its own."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", "\n" + f"<{prio}>")
        return f"<{prio}>{text}"


def setup_logging(level: str, environ: MutableMapping[str, str]) -> None:
    """Log to stderr, in journald's form under systemd. Call lines go their own way
    (:mod:`cofferd.observe.calllog`)."""
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Request URLs may carry presigned signatures: keep the HTTP stack quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    """cofferd's command line (also what its man page is generated from)."""
    parser = argparse.ArgumentParser(prog="cofferd", description="The coffer device daemon.")
    parser.add_argument("--version", action="version", version=f"cofferd {__version__}")
    parser.add_argument("--socket", type=Path, help="bind this socket (default: from settings)")
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default: /etc/coffer/cofferd.toml)"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None, environ: MutableMapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = Settings.load(args.config, env)
        if args.socket is not None:
            settings = dataclasses.replace(settings, socket_path=args.socket)
        setup_logging(settings.log_level, env)
    except (SettingsError, ValueError) as exc:
        print(f"cofferd: {exc}", file=sys.stderr)
        return 2
    return _end(serve(settings, env))


def _end(status: int) -> NoReturn:
    """End the process now, once served: what must be written is written.

    Python's own exit would first join every ``concurrent.futures`` worker
    (its atexit hook), one waiting on a stalled upstream included: up to
    ``upstream_timeout`` and its retries past the stop (measured: "stopped"
    logged at 12 s, the exit at 29.1 s). And it would tear the interpreter
    down under calls left running, whose next pool submit then fails
    ("cannot schedule new futures after shutdown"). Nothing is left to lose:
    the cache and the index are crash-safe by design (a SIGKILL leaves them
    whole), and the logs are flushed here (the handlers flush each record;
    ``logging.shutdown`` would take their locks, which a call left running
    may hold).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # already closed: nothing to flush
            stream.flush()
    os._exit(status)


def serve(settings: Settings, env: MutableMapping[str, str]) -> int:
    """Serve until SIGTERM/SIGINT; the exit status."""
    notifier = Notifier.from_environ(env)
    try:
        listener = systemd_socket(env, os.getpid())
        unlink = None if listener is not None else settings.socket_path
        if listener is None:
            listener = bind_unix(settings.socket_path)
    except ListenError as exc:
        # One line an operator can act on; a traceback would only hide it.
        log.error("cannot serve: %s", exc)  # noqa: TRY400
        return 1
    # Children (none today) must not think the socket or the notify channel is theirs.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)

    app = App(settings, notifier)
    calls = None
    if logging.getLogger("cofferd.call").isEnabledFor(logging.INFO):
        calls = CallLog(sys.stderr.fileno(), journal=bool(env.get("JOURNAL_STREAM"))).start()
    # Audit records go natively to journald when it is there; otherwise their
    # line goes through the call log (one line per call either way).
    sink = open_sink(env)
    journal = AuditLog(sink) if isinstance(sink, JournalSender) else None
    dispatcher = build_dispatcher(settings, call_log=calls, journal=journal, registry=app.metrics)
    server = Server(
        listener,
        dispatcher,
        app,
        unlink_path=unlink,
        call_log=calls,
        max_connections=settings.max_connections,
        idle_timeout=settings.idle_timeout,
        partial_line_timeout=settings.partial_line_timeout,
        max_per_uid=settings.max_connections_per_uid,
    )
    textfile = None
    if settings.metrics_textfile_dir is not None:
        textfile = TextfileWriter(
            app.metrics, settings.metrics_textfile_dir, settings.metrics_interval
        ).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only flags and a wake-up byte here: the work happens in the main flow.
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.set_wakeup_fd(server.wakeup_fileno(), warn_on_full_buffer=False)

    where = "the socket systemd passed" if unlink is None else str(unlink)
    log.info("cofferd %s serving on %s (upstream %s)", __version__, where, settings.upstream_url)
    left = 0  # calls still running at the end of the stop
    try:
        server.serve_forever(on_ready=notifier.ready)
        busy = server.in_flight()
        log.info("stopping: %d call(s) in flight", busy)
        notifier.stopping(f"stopping, {busy} call(s) in flight")
        # One grace for everything, so the stop stays bounded (systemd's
        # TimeoutStopSec must cover shutdown_grace plus a few seconds).
        deadline = time.monotonic() + settings.shutdown_grace
        app.unlock.close(settings.shutdown_grace)  # the engine drops the cut load
        signal.set_wakeup_fd(-1)  # the server closes its wake-up socket
        left = server.shutdown(max(0.0, deadline - time.monotonic()))
    finally:
        notifier.close()
        if left:
            # Their callers have their answer; the pools and the client stay
            # open under them until the process ends (a closed pool would fail
            # their next step with a traceback instead of nothing).
            log.warning("%d call(s) left running as cofferd exits", left)
        else:
            app.close()
        if textfile is not None:
            textfile.stop()
            textfile.write_quietly()  # the last figures, as the daemon stops
        if calls is not None:
            calls.stop()
        sink.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
