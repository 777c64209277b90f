"""The login failure limiter: too many failures for one email → 429 for a while.

Counted per email (case-folded), whether or not the account exists, so the
limiter itself tells nothing about who has an account. While an email is
limited its password is not even checked: a guess then learns nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# Past this many tracked emails, forget those whose failures have all aged out.
_SWEEP_ABOVE = 1024


class LoginLimiter:
    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def attempt(self, email: str) -> int | None:
        """Seconds to wait if ``email`` is limited; else count this attempt and return None.

        The attempt counts as a failure until :meth:`succeeded` clears the
        count: so a burst of parallel guesses is limited as soon as it
        starts, not after the first ones have been checked.
        """
        now = self._clock()
        with self._lock:
            key = email.casefold()
            recent = self._recent(key, now)
            if recent is not None and len(recent) >= self._max:
                return max(1, math.ceil(recent[0] + self._window - now))
            if recent is None:
                if len(self._failures) >= _SWEEP_ABOVE:
                    self._sweep(now)
                recent = self._failures[key] = deque()
            recent.append(now)
            return None

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop(email.casefold(), None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        recent = self._failures.get(key)
        if recent is None:
            return None
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        if not recent:
            del self._failures[key]
            return None
        return recent

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
