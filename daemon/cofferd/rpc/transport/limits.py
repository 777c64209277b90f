"""Per-caller limits of the transport: deadline checks, parked fds, log lines at a bounded rate.

Kept apart from :mod:`cofferd.rpc.transport.server` so the rules one caller is held
to read in one place (docs/reliability.md has what each costs a caller).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from coffer.protocol import MAX_FDS

log = logging.getLogger("cofferd.rpc")

#: Defaults of the per-caller limits (the settings override them).
IDLE_TIMEOUT = 60.0
PARTIAL_LINE_TIMEOUT = 10.0
MAX_PER_UID = 64
#: At most one line of each rate-limited kind per this many seconds.
LOG_INTERVAL = 10.0


class RateLimitedLog:
    """A warning that may repeat as fast as a loop turns: one line per interval, counted."""

    def __init__(self, what: str, clock: Callable[[], float], interval: float = LOG_INTERVAL):
        self._what = what
        self._clock = clock
        self._interval = interval
        self._count = 0
        self._logged = float("-inf")

    def warn(self, detail: str) -> None:
        self._count += 1
        now = self._clock()
        if now - self._logged >= self._interval:
            log.warning(
                "%s %d time(s) in the last %.0f s: %s",
                self._what,
                self._count,
                self._interval,
                detail,
            )
            self._count = 0
            self._logged = now


def scan_interval(idle_timeout: float, partial_line_timeout: float) -> float:
    """How often the deadlines are checked: a tenth of the shorter one, 10 ms to 0.5 s.

    A connection is cut at most this late; the defaults (60 s, 10 s) cost two
    wake-ups a second.
    """
    return min(max(min(idle_timeout, partial_line_timeout) / 10, 0.01), 0.5)


def cap_parked(pending: dict[int, list[int]]) -> None:
    """Close at once fds parked on an unfinished line beyond what one request may carry.

    The line keeps placeholders, so when it ends it is refused for too many
    fds like any other; meanwhile the caller holds no more than ``MAX_FDS``
    of cofferd's descriptors.
    """
    for line_no, fds in pending.items():
        if len(fds) > MAX_FDS:
            for fd in fds:
                if fd >= 0:
                    with contextlib.suppress(OSError):  # nothing left to release
                        os.close(fd)
            pending[line_no] = [-1] * (MAX_FDS + 1)
