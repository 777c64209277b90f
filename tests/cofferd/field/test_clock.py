"""The trusted clock's rules, with both clocks injected."""

from __future__ import annotations

from pathlib import Path

import pytest

from cofferd.errors import OfflineRefused
from cofferd.field.clock import TrustedClock
from cofferd.resources.index import Index


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 50.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def make(index: Index | None, c: Clocks, skew: float = 300.0) -> TrustedClock:
    return TrustedClock(index, max_skew=skew, wall=lambda: c.wall, monotonic=lambda: c.mono)


def test_within_the_lease_is_allowed(clocks: Clocks) -> None:
    clock = make(None, clocks)
    clock.contact(clocks.wall)
    clock.check(clocks.wall + 100)


def test_expired_lease_says_when(clocks: Clocks) -> None:
    clock = make(None, clocks)
    with pytest.raises(OfflineRefused, match=r"the lease expired at 1970-01-12T13:46:40Z"):
        clock.check(clocks.wall)


def test_clock_set_back_behind_the_persisted_mark_is_refused(
    tmp_path: Path, clocks: Clocks
) -> None:
    index = Index(tmp_path / "index.sqlite3")
    make(index, clocks).trust(clocks.wall + 1000)
    # A new process (a restart) reads the mark back.
    clock = make(index, clocks)
    assert clock.high_water_mark == clocks.wall + 1000
    with pytest.raises(OfflineRefused, match=r"behind the trusted time by 1000 s"):
        clock.check(clocks.wall + 10_000)
    clocks.wall += 800  # within the skew now
    clock.check(clocks.wall + 10_000)


def test_the_mark_never_goes_down(tmp_path: Path, clocks: Clocks) -> None:
    index = Index(tmp_path / "index.sqlite3")
    clock = make(index, clocks)
    clock.trust(500.0)
    clock.trust(100.0)
    assert clock.high_water_mark == 500.0
    assert index.get_meta("trusted_time") == "500.0"


def test_monotonic_bound_since_the_last_contact(clocks: Clocks) -> None:
    clock = make(None, clocks)
    clock.contact(clocks.wall)
    expires = clocks.wall + 100
    clocks.wall -= 50  # the wall clock moved back (within the skew): not enough
    clocks.mono += 101
    with pytest.raises(OfflineRefused, match=r"offline for 101 s .* allows \(100 s\)"):
        clock.check(expires)


def test_contact_raises_the_mark_from_the_date(clocks: Clocks) -> None:
    clock = make(None, clocks)
    clock.contact(clocks.wall + 5000)
    assert clock.last_contact == clocks.wall + 5000
    with pytest.raises(OfflineRefused, match="behind the trusted time"):
        clock.check(clocks.wall + 10_000)
