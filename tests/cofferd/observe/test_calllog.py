"""The call log's lines, in both forms, written out in order on stop."""

from __future__ import annotations

import os
import time

from cofferd.observe.calllog import CallLog
from cofferd.rpc.dispatch.context import PeerCred

PEER = PeerCred(pid=42, uid=1000, gid=1001)


def written(journal: bool, count: int) -> list[str]:
    r, w = os.pipe()
    at = time.mktime((2026, 1, 31, 12, 0, 0, 0, 0, -1)) + 0.25
    log = CallLog(w, journal=journal, wall_clock=lambda: at).start()
    for i in range(count):
        log.record("load", "ok" if i % 2 else "error 404", PEER, 0.0123)
    log.stop()
    os.close(w)
    with open(r, "rb") as pipe:
        return pipe.read().decode().splitlines()


def test_journal_lines_carry_a_priority_and_no_timestamp() -> None:
    lines = written(journal=True, count=2)
    assert lines == [
        "<6>cofferd.call: load error 404 uid=1000 gid=1001 pid=42 12.3ms",
        "<6>cofferd.call: load ok uid=1000 gid=1001 pid=42 12.3ms",
    ]


def test_plain_lines_carry_a_timestamp_and_all_are_written_in_order() -> None:
    lines = written(journal=False, count=500)
    assert len(lines) == 500
    assert lines[0] == (
        "2026-01-31 12:00:00,250 INFO cofferd.call: load error 404 uid=1000 gid=1001 pid=42 12.3ms"
    )
    assert all(
        line.endswith(
            ("error 404 uid=1000 gid=1001 pid=42 12.3ms", "ok uid=1000 gid=1001 pid=42 12.3ms")
        )
        for line in lines
    )
    assert [("ok" in line) for line in lines] == [bool(i % 2) for i in range(500)]
