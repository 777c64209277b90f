"""Trusted time for offline use: a persisted high-water mark and a monotonic bound.

A device's wall clock can be wrong or set back on purpose to stretch a lease.
Two defences, both checked before any offline use:

1. The high-water mark (HWM): the latest time cofferd has reason to trust
   (the ``iat`` of verified leases, the ``Date`` of the upstream's answers),
   kept in the index's meta table so it survives restarts. Offline use is
   refused while the wall clock is behind it by more than ``max_skew``.
2. Within one boot, the monotonic clock (which the wall clock's changes do not
   move) bounds offline use since the last contact: at most ``exp - t_contact``
   seconds, ``t_contact`` being the upstream's time at that contact.

Both clocks are injected so the rules can be tested without waiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cofferd.errors import OfflineRefused, StateUnwritable

META_KEY = "trusted_time"


class MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...

    def raise_meta_float(self, key: str, value: float) -> float: ...


class TrustedClock:
    def __init__(
        self,
        meta: MetaStore | None,
        *,
        max_skew: float = 300.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._meta = meta
        self._max_skew = max_skew
        self._wall = wall
        self._mono = monotonic
        self._lock = threading.Lock()
        stored = meta.get_meta(META_KEY) if meta is not None else None
        self._hwm = float(stored) if stored is not None else float("-inf")
        #: (monotonic time, upstream time) of the last contact in this boot.
        self._contact: tuple[float, float] | None = None

    @property
    def high_water_mark(self) -> float | None:
        with self._lock:
            return None if self._hwm == float("-inf") else self._hwm

    @property
    def last_contact(self) -> float | None:
        """The upstream's time at the last contact in this boot, if any."""
        with self._lock:
            return None if self._contact is None else self._contact[1]

    def trust(self, t: float) -> None:
        """Raise the HWM to ``t`` (a verified lease's ``iat``)."""
        with self._lock:
            if t <= self._hwm:
                return
            self._hwm = t
        if self._meta is not None:
            # Kept in memory if the state dir cannot take it (the index logs that once).
            with contextlib.suppress(StateUnwritable):
                self._meta.raise_meta_float(META_KEY, t)

    def contact(self, upstream_time: float | None) -> None:
        """The upstream answered; ``upstream_time`` is its ``Date`` (None: unknown)."""
        t = self._wall() if upstream_time is None else upstream_time
        with self._lock:
            self._contact = (self._mono(), t)
        if upstream_time is not None:
            self.trust(upstream_time)

    def check(self, expires: float) -> None:
        """OfflineRefused unless offline use of a lease ending at ``expires`` is allowed now."""
        now = self._wall()
        with self._lock:
            hwm, contact = self._hwm, self._contact
        behind = hwm - now
        if behind > self._max_skew:
            raise OfflineRefused(
                f"the clock is behind the trusted time by {behind:.0f} s"
                f" (more than the allowed {self._max_skew:.0f} s)"
            )
        if now >= expires:
            raise OfflineRefused(f"the lease expired at {_iso(expires)}")
        if contact is not None:
            mono_at, upstream_at = contact
            offline_for = self._mono() - mono_at
            allowed = expires - upstream_at
            if offline_for > allowed:
                raise OfflineRefused(
                    f"offline for {offline_for:.0f} s since the last contact, longer than"
                    f" the lease allows ({max(allowed, 0):.0f} s)"
                )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
