"""The login failure limiter: too many failures for one email → 429 for a while.

Counted per email (case-folded), whether or not the account exists, so the
limiter itself tells nothing about who has an account. While an email is
limited its password is not even checked: a guess then learns nothing.

Password checks of one email run one at a time (:meth:`LoginLimiter.check`),
so a burst of parallel guesses cannot all be checked before the first
failures count. Logins of different emails do not wait for each other.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Past this many tracked emails, forget those whose failures have all aged out.
_SWEEP_ABOVE = 1024


@dataclass
class Attempt:
    """One login attempt under way: unless marked succeeded, it counts as a failure."""

    #: Seconds to wait if the email is limited (then nothing is checked or counted).
    retry_after: int | None
    succeeded: bool = False


class LoginLimiter:
    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()  # guards the two dicts
        self._failures: dict[str, deque[float]] = {}
        self._checking: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def check(self, email: str) -> Iterator[Attempt]:
        """Hold the email's turn while its password is checked.

        ``attempt.retry_after`` is the seconds to wait if the email is limited
        (then check nothing); set ``attempt.succeeded`` on success, which
        clears the count; anything else counts as a failure.
        """
        key = email.casefold()
        turn = self._turn(key)
        try:
            with turn:
                attempt = Attempt(self._retry_after(key))
                try:
                    yield attempt
                finally:
                    if attempt.retry_after is None:
                        self._record(key, attempt.succeeded)
        finally:
            self._release(key)

    def _turn(self, key: str) -> threading.Lock:
        with self._lock:
            turn, users = self._checking.get(key, (threading.Lock(), 0))
            self._checking[key] = (turn, users + 1)
            return turn

    def _release(self, key: str) -> None:
        with self._lock:
            turn, users = self._checking[key]
            if users == 1:
                del self._checking[key]
            else:
                self._checking[key] = (turn, users - 1)

    def _retry_after(self, key: str) -> int | None:
        now = self._clock()
        with self._lock:
            recent = self._recent(key, now)
            if recent is None or len(recent) < self._max:
                return None
            return max(1, math.ceil(recent[0] + self._window - now))

    def _record(self, key: str, succeeded: bool) -> None:
        now = self._clock()
        with self._lock:
            if succeeded:
                self._failures.pop(key, None)
                return
            recent = self._recent(key, now)
            if recent is None:
                if len(self._failures) >= _SWEEP_ABOVE:
                    self._sweep(now)
                recent = self._failures[key] = deque()
            recent.append(now)
            # Only the newest max failures matter for the answer.
            while len(recent) > self._max:
                recent.popleft()

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
