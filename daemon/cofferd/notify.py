"""Talking to systemd: readiness, status text, watchdog pings, stopping (sd_notify).

A :class:`Notifier` is built once in ``main()`` from the environment and passed
to whoever has something to say. Without ``NOTIFY_SOCKET`` it stays silent, so
the daemon runs the same by hand. ``STATUS=`` is composed from named parts
(the transfers under way, the unlock progress, ...) so that features update
their own line without knowing the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping

import sdnotify

log = logging.getLogger("cofferd.notify")

#: Sends one sd_notify datagram, e.g. ``"READY=1"``.
Send = Callable[[str], None]


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None.

    systemd sets ``WATCHDOG_PID`` when the watchdog is meant for one process of
    the service: a child that inherited the variables must not ping for it.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """The daemon's voice towards systemd; thread-safe."""

    def __init__(self, send: Send | None, watchdog: float | None = None) -> None:
        self._send = send
        self._watchdog = watchdog
        self._lock = threading.Lock()
        self._parts: dict[str, str] = {}
        self._work: dict[int, str] = {}
        self._next = 0
        self._stop = threading.Event()
        self._phase = "serving"
        self._pinger: threading.Thread | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """A notifier for the ``NOTIFY_SOCKET`` in ``environ``, or a silent one."""
        if not environ.get("NOTIFY_SOCKET"):
            return cls(None)
        # sdnotify reads the variable itself; it also swallows send errors, as a
        # daemon should not die because its supervisor stopped listening.
        sd = sdnotify.SystemdNotifier()
        return cls(sd.notify, watchdog_interval(environ, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def notify(self, message: str) -> None:
        if self._send is not None:
            with self._lock:
                self._send(message)

    def ready(self) -> None:
        """The socket serves: ``READY=1`` with the first status, then watchdog pings."""
        self.notify("READY=1\nSTATUS=" + self._status_text())
        if self._watchdog is not None and self._pinger is None:
            self._pinger = threading.Thread(target=self._ping, name="watchdog", daemon=True)
            self._pinger.start()

    def stopping(self, why: str = "stopping") -> None:
        self._phase = "stopping"  # later status lines must not read "serving"
        self.notify(f"STOPPING=1\nSTATUS={why}")

    def close(self) -> None:
        self._stop.set()
        if self._pinger is not None:
            self._pinger.join()

    def set_status(self, part: str, text: str | None) -> None:
        """Set (or with None clear) one named part of the ``STATUS=`` line."""
        with self._lock:
            if text is None:
                self._parts.pop(part, None)
            else:
                self._parts[part] = text
        self._push()

    @contextlib.contextmanager
    def working(self, what: str) -> Iterator[None]:
        """Show ``what`` (e.g. ``loading models/x``) in the status while the block runs."""
        with self._lock:
            key = self._next
            self._next += 1
            self._work[key] = what
        self._push()
        try:
            yield
        finally:
            with self._lock:
                del self._work[key]
            self._push()

    def _status_text(self) -> str:
        with self._lock:
            work = list(self._work.values())
            parts = list(self._parts.values())
        if not work:
            head = f"{self._phase}, idle"
        elif len(work) == 1:
            head = f"{self._phase}, {work[0]}"
        else:
            head = f"{self._phase}, {len(work)} transfers: " + ", ".join(work[:3])
        return "; ".join([head, *parts])

    def _push(self) -> None:
        if self._send is not None:
            self.notify("STATUS=" + self._status_text())

    def _ping(self) -> None:
        assert self._watchdog is not None
        while not self._stop.wait(self._watchdog):
            self.notify("WATCHDOG=1")
