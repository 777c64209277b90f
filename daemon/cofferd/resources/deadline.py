"""One deadline over a whole HTTP exchange, not over each socket read.

``requests`` applies its read timeout to each ``recv``: a server that trickles
one byte per read keeps an answer going for ever. Here a :class:`Guard` covers
an exchange (the request, the answer's head and body) and one watchdog thread
shuts the connection's socket down when the guard's time is up, whatever
call is blocked on it; the blocked call then fails like a cut connection.

Two rules, one per kind of exchange:

- a whole-answer deadline (API calls, the answer to a PUT): the exchange ends
  by then or is cut;
- a progress rule (big transfers): each window of ``window`` seconds must
  move at least :data:`MIN_PROGRESS` bytes (:meth:`Guard.moved`); a window
  that did rolls on to the next, one that did not ends the exchange. A
  trickle of a byte per read fails at the end of its first window. The
  clock stops while our side holds the exchange up (:meth:`Guard.paused`: a
  slow consumer of a download, a slow source of an upload), so only the
  server's slowness counts.

The connections of a :class:`requests.Session` are watched once the session
mounts a :class:`GuardedAdapter`; an exchange started inside
``with attached(guard):`` belongs to ``guard``, whose time the watchdog keeps
inside ``with watched(guard):``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Bytes each window of a big transfer must move (2 KiB/s over 30 s windows).
MIN_PROGRESS = 64 * 1024

_local = threading.local()


class Guard:
    """The deadline of one exchange; see the module docstring. Times are ``time.monotonic``."""

    def __init__(self, seconds: float, *, progress: bool = False) -> None:
        self._window = seconds
        self._lock = threading.Lock()
        self.deadline = time.monotonic() + seconds
        self._progress = progress
        self._moved = 0
        self._paused = False
        self.expired = False
        self._conns: list[Any] = []
        #: The watchdog's one live entry for this guard (older ones are stale).
        self._armed = 0.0

    def moved(self, n: int) -> None:
        """``n`` more bytes went through (the progress rule counts them)."""
        with self._lock:
            self._moved += n

    def answer_within(self, seconds: float) -> None:
        """From now on a whole-answer deadline: the rest must come within ``seconds``."""
        with self._lock:
            self._progress = False
            self.deadline = time.monotonic() + seconds
        _WATCHDOG.watch(self)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Our side holds the exchange up: the window's clock stops until the block ends."""
        with self._lock:
            left = self.deadline - time.monotonic()
            self._paused = True
        try:
            yield
        finally:
            with self._lock:
                self._paused = False
                self.deadline = time.monotonic() + max(left, 0.0)
                earlier = self.deadline < self._armed
            if earlier:
                _WATCHDOG.watch(self)

    def _attach(self, conn: Any) -> None:
        conn.coffer_guard = self
        with self._lock:
            self._conns.append(conn)

    def _due(self, now: float) -> float | None:
        """At the deadline: the next one if a window moved enough, else None (cut it)."""
        with self._lock:
            if self._paused:
                return now + self._window  # look again; the resume sets the deadline
            if now < self.deadline:
                return self.deadline
            if self._progress and self._moved >= MIN_PROGRESS:
                self._moved = 0
                self.deadline = now + self._window
                return self.deadline
            self.expired = True
            conns, self._conns = self._conns, []
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if sock is not None and getattr(conn, "coffer_guard", None) is self:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return None


@contextlib.contextmanager
def watched(guard: Guard) -> Iterator[Guard]:
    """The watchdog keeps ``guard``'s time until the block ends (any thread may run it)."""
    _WATCHDOG.watch(guard)
    try:
        yield guard
    finally:
        _WATCHDOG.forget(guard)


@contextlib.contextmanager
def attached(guard: Guard) -> Iterator[None]:
    """The exchanges this thread starts inside the block are ``guard``'s.

    Never around a ``yield``: the thread runs other code while a generator waits.
    """
    previous = getattr(_local, "guard", None)
    _local.guard = guard
    try:
        yield
    finally:
        _local.guard = previous


class _Watchdog:
    """One thread: wakes at the earliest deadline, asks its guard, cuts or re-arms."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, guard: Guard) -> None:
        with self._cond:
            self._live.add(id(guard))
            guard._armed = guard.deadline
            heapq.heappush(self._heap, (guard.deadline, next(self._seq), guard))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="upstream-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def forget(self, guard: Guard) -> None:
        with self._cond:
            self._live.discard(id(guard))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, guard = self._heap[0]
                now = time.monotonic()
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                if id(guard) not in self._live or at != guard._armed:
                    continue  # forgotten, or re-armed since
            later = guard._due(now)
            if later is not None:
                with self._cond:
                    if id(guard) in self._live:
                        guard._armed = later
                        heapq.heappush(self._heap, (later, next(self._seq), guard))


_WATCHDOG = _Watchdog()


def _attach_current(conn: Any) -> None:
    guard: Guard | None = getattr(_local, "guard", None)
    conn.coffer_guard = guard
    if guard is not None:
        guard._attach(conn)


class _GuardedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections the exchange's :class:`Guard` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
