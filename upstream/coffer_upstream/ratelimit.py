"""The login failure limiter: too many failures from one source → 429 for a while.

Counted per source (the client's address; behind a trusted proxy the address
it forwards), in the database, so every replica sees the same count. The
account's owner logging in from elsewhere is never held back by a guesser:
its email is not what is limited. While a source is limited its password is
not even checked: a guess then learns nothing and costs no hash.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from coffer_upstream.accounts import Accounts


class LoginLimiter:
    def __init__(
        self, accounts: Accounts, max_failures: int, window: float, clock: Callable[[], float]
    ) -> None:
        self._accounts = accounts
        self._max = max_failures
        self._window = window
        self._clock = clock

    def retry_after(self, source: str) -> int | None:
        """Seconds ``source`` must wait before its next login, or None if it may go on."""
        now = self._clock()
        count, oldest = self._accounts.login_failures(source, int(now - self._window))
        if count < self._max or oldest is None:
            return None
        return max(1, math.ceil(oldest + self._window - now))

    def failed(self, source: str) -> None:
        self._accounts.add_login_failure(source, int(self._clock()))

    def succeeded(self, source: str) -> None:
        self._accounts.clear_login_failures(source)
