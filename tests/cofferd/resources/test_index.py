"""The device index: cache entries, pins, sealed records, the high-water mark."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from cofferd.resources.index import INDEX_NAME, Entry, Index


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def index(tmp_path: Path, clock: Clock) -> Index:
    return Index(tmp_path / INDEX_NAME, clock=clock)


def test_entries_in_use_order_and_eviction_order(index: Index, clock: Clock) -> None:
    index.add_entry("models", "a.bin", 1, "models/a.bin/1", 10, 5)
    clock.now += 1
    index.add_entry("models", "b.bin", 1, "models/b.bin/1", 20, 15)
    clock.now += 1
    index.touch("models", "a.bin", 1)

    assert [e.name for e in index.entries()] == ["a.bin", "b.bin"]
    assert [e.name for e in index.eviction_order()] == ["b.bin", "a.bin"]
    assert index.total_size() == 30
    assert index.entry("models", "a.bin", 1) == Entry(
        "models", "a.bin", 1, "models/a.bin/1", 10, 5, 1002.0, False
    )


def test_pinned_entries_are_never_eviction_candidates(index: Index) -> None:
    index.add_entry("models", "a.bin", 1, "f1", 10, 5)
    index.add_entry("models", "b.bin", 1, "f2", 10, 5)
    index.set_pinned("models", "a.bin", True)

    assert [e.name for e in index.eviction_order()] == ["b.bin"]
    assert index.entry("models", "a.bin", 1).pinned  # type: ignore[union-attr]
    index.set_pinned("models", "a.bin", False)
    assert {e.name for e in index.eviction_order()} == {"a.bin", "b.bin"}


def test_pin_outlives_the_version(index: Index) -> None:
    index.set_pinned("models", "a.bin", True)
    index.add_entry("models", "a.bin", 7, "f7", 10, 5)
    assert index.entry("models", "a.bin", 7).pinned  # type: ignore[union-attr]


def test_remove_entry(index: Index) -> None:
    index.add_entry("models", "a.bin", 1, "f1", 10, 5)
    index.remove_entry("models", "a.bin", 1)
    assert index.entry("models", "a.bin", 1) is None
    assert index.total_size() == 0


def test_reconcile_adds_unknown_files_and_drops_missing_ones(index: Index) -> None:
    index.add_entry("models", "gone.bin", 1, "g", 10, 5)
    index.add_entry("models", "kept.bin", 1, "k", 10, 5)
    found = [
        Entry("models", "kept.bin", 1, "k", 10, 5, 1.0),
        Entry("models", "new.bin", 2, "n", 30, 25, 500.0),
    ]

    assert index.reconcile(found) == (1, 1)
    assert {e.name for e in index.entries()} == {"kept.bin", "new.bin"}
    assert index.entry("models", "new.bin", 2).last_used == 500.0  # type: ignore[union-attr]
    # The known entry keeps its own last use, not the scan's.
    assert index.entry("models", "kept.bin", 1).last_used == 1000.0  # type: ignore[union-attr]


def test_records_replace_older_versions_and_erase(index: Index) -> None:
    index.put_record("models", "a.bin", 1, 2000.0, b"sealed-1")
    index.put_record("models", "a.bin", 2, 3000.0, b"sealed-2")
    index.put_record("models", "b.bin", 1, None, b"sealed-b")

    record = index.record("models", "a.bin")
    assert record is not None
    assert (record.version, record.lease_expires, record.sealed) == (2, 3000.0, b"sealed-2")
    assert "sealed" not in repr(record).split("(", 1)[1]
    assert [r.name for r in index.records()] == ["a.bin", "b.bin"]
    assert index.delete_record("models", "a.bin")
    assert not index.delete_record("models", "a.bin")
    assert index.clear_records() == 1
    assert index.records() == []


def test_high_water_mark_only_rises(index: Index) -> None:
    assert index.raise_meta_float("trusted_time", 50.0) == 50.0
    assert index.raise_meta_float("trusted_time", 40.0) == 50.0
    assert index.raise_meta_float("trusted_time", 60.5) == 60.5
    assert index.get_meta("trusted_time") == "60.5"


def test_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    first = Index(tmp_path / INDEX_NAME, clock=clock)
    first.add_entry("models", "a.bin", 1, "f1", 10, 5)
    first.put_record("models", "a.bin", 1, 2000.0, b"s")
    first.raise_meta_float("k", 1.5)
    first.close()

    again = Index(tmp_path / INDEX_NAME, clock=clock)
    assert again.entry("models", "a.bin", 1) is not None
    assert again.record("models", "a.bin") is not None
    assert again.get_meta("k") == "1.5"


def test_an_unreadable_database_is_moved_aside(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / INDEX_NAME
    path.write_bytes(b"this is not a database" * 100)

    index = Index(path, clock=clock)

    index.add_entry("models", "a.bin", 1, "f1", 10, 5)
    assert index.entry("models", "a.bin", 1) is not None
    aside = list(tmp_path.glob(f"{INDEX_NAME}.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone() == (1,)


def test_concurrent_writers(index: Index) -> None:
    def work(n: int) -> None:
        for i in range(50):
            index.add_entry("models", f"m{n}.bin", i, f"f{n}-{i}", 1, 1)
            index.touch("models", f"m{n}.bin", i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert index.total_size() == 200
