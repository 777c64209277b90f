"""Audit records as journald receives them, through a real datagram socket."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cofferd.observe.audit import AuditLog, AuditRecord
from cofferd.observe.journal import JournalSender, StderrSink
from fixtures.journald import FakeJournald

LOAD_ID = "57ceaf16529b48b6a928cb96acdcfad8"
LOGIN_ID = "6e1144617e614150921f039e5557b6f7"


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.sock")
    yield fake
    fake.close()


def load_ok(**changes: Any) -> AuditRecord:
    base = AuditRecord(
        method="load",
        message_id=LOAD_ID,
        outcome="ok",
        uid=1000,
        gid=1001,
        pid=4242,
        duration_s=1.2595,
        folder="models",
        name="model.bin",
        version=3,
        bytes=5 << 20,
    )
    return dataclasses.replace(base, **changes)


def test_a_load_record_arrives_with_every_field(journald: FakeJournald) -> None:
    log = AuditLog(JournalSender(journald.path))
    assert log.record(load_ok())
    got = journald.receive()
    assert got == {
        "MESSAGE": b"load ok models/model.bin v3 5242880 bytes uid=1000 gid=1001 pid=4242 1259.5ms",
        "MESSAGE_ID": b"57ceaf16529b48b6a928cb96acdcfad8",
        "PRIORITY": b"6",
        "SYSLOG_IDENTIFIER": b"cofferd",
        "COFFER_METHOD": b"load",
        "COFFER_OUTCOME": b"ok",
        "COFFER_UID": b"1000",
        "COFFER_GID": b"1001",
        "COFFER_PID": b"4242",
        "COFFER_DURATION_MS": b"1259.5",
        "COFFER_FOLDER": b"models",
        "COFFER_NAME": b"model.bin",
        "COFFER_VERSION": b"3",
        "COFFER_BYTES": b"5242880",
    }
    log.close()


def test_an_error_record_carries_its_code_and_a_warning_priority(journald: FakeJournald) -> None:
    log = AuditLog(JournalSender(journald.path))
    failed = AuditRecord(
        "login", LOGIN_ID, "error", uid=0, gid=0, pid=1, duration_s=0.01, error_code=-32001
    )
    log.record(failed)
    got = journald.receive()
    assert got["COFFER_ERROR_CODE"] == b"-32001"
    assert got["PRIORITY"] == b"4"
    assert got["MESSAGE_ID"] == LOGIN_ID.encode()
    assert got["MESSAGE"] == b"login error -32001 uid=0 gid=0 pid=1 10.0ms"
    assert "COFFER_NAME" not in got
    assert "COFFER_BYTES" not in got
    internal = AuditRecord(
        "load", LOAD_ID, "error", uid=0, gid=0, pid=1, duration_s=0, error_code=-32603
    )
    assert internal.priority == 3
    log.close()


def test_a_record_too_big_for_a_datagram_goes_through_the_memfd(journald: FakeJournald) -> None:
    # Names are bounded where they are checked; the audit log must not be.
    record = load_ok(name="n" * 400_000)
    log = AuditLog(JournalSender(journald.path))
    log.record(record)
    log.close()
    got = journald.receive()
    assert journald.memfd_seals is not None
    assert got["COFFER_NAME"] == b"n" * 400_000
    assert got["COFFER_UID"] == b"1000"


def test_a_record_has_no_room_for_free_form_data() -> None:
    names = {f.name for f in dataclasses.fields(AuditRecord)}
    assert names == {
        "method",
        "message_id",
        "outcome",
        "uid",
        "gid",
        "pid",
        "duration_s",
        "error_code",
        "folder",
        "name",
        "version",
        "bytes",
    }
    with pytest.raises(TypeError):
        AuditRecord(  # type: ignore[call-arg]
            "login", LOGIN_ID, "ok", uid=0, gid=0, pid=1, duration_s=0, params={"password": "x"}
        )
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_ok().name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"method": ""}, ValueError),
        ({"message_id": "57CEAF16529B48B6A928CB96ACDCFAD8"}, ValueError),
        ({"message_id": "57ceaf16"}, ValueError),
        ({"outcome": "maybe"}, ValueError),
        ({"error_code": -32001}, ValueError),  # ok with an error code
        ({"uid": "0"}, TypeError),
        ({"bytes": True}, TypeError),
        ({"version": 1.5}, TypeError),
        ({"name": b"model.bin"}, TypeError),
        ({"folder": {"password": "x"}}, TypeError),
        ({"duration_s": -1}, ValueError),
    ],
)
def test_bad_records_are_refused(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        load_ok(**changes)
    with pytest.raises(ValueError, match="exactly when"):
        AuditRecord("load", LOAD_ID, "error", uid=0, gid=0, pid=1, duration_s=0)


def test_off_journald_the_record_is_one_readable_stderr_line() -> None:
    out = io.StringIO()
    AuditLog(StderrSink(out)).record(load_ok())
    assert out.getvalue() == (
        "cofferd.audit: load ok models/model.bin v3 5242880 bytes"
        " uid=1000 gid=1001 pid=4242 1259.5ms\n"
    )
