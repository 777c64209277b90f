"""The journal sender against a real AF_UNIX datagram socket standing in for journald's."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofferd.observe.journal import (
    JournalSender,
    StderrSink,
    check_field_name,
    encode,
    open_sink,
    stderr_is_journal,
)
from fixtures.journald import FakeJournald

_ALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.sock")
    yield fake
    fake.close()


def test_plain_fields_arrive_as_key_value(journald: FakeJournald) -> None:
    sender = JournalSender(journald.path)
    assert sender.send({"MESSAGE": "hello", "PRIORITY": 6, "COFFER_UID": 1000})
    assert journald.receive() == {"MESSAGE": b"hello", "PRIORITY": b"6", "COFFER_UID": b"1000"}
    sender.close()


def test_a_value_with_a_newline_uses_the_binary_form(journald: FakeJournald) -> None:
    sender = JournalSender(journald.path)
    sender.send({"MESSAGE": "two\nlines", "X": b"a=b\n\x00c"})
    binary = b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert encode({"MESSAGE": "two\nlines"}) == binary
    assert journald.receive() == {"MESSAGE": b"two\nlines", "X": b"a=b\n\x00c"}
    sender.close()


def test_an_entry_over_the_datagram_limit_goes_through_a_sealed_memfd(
    journald: FakeJournald,
) -> None:
    big = "x" * (1 << 20)  # over any AF_UNIX datagram limit (net.core.wmem_max)
    sender = JournalSender(journald.path)
    assert sender.send({"MESSAGE": big, "COFFER_METHOD": "load"})
    assert journald.receive() == {"MESSAGE": big.encode(), "COFFER_METHOD": b"load"}
    assert journald.memfd_seals == _ALL_SEALS
    sender.close()


@pytest.mark.parametrize(
    "name", ["", "_PID", "lower", "1ABC", "A-B", "A=B", "A\nB", "MESSAGÉ", "A" * 65]
)
def test_bad_field_names_are_refused(name: str, journald: FakeJournald) -> None:
    with pytest.raises(ValueError, match="bad journal field name"):
        check_field_name(name)
    sender = JournalSender(journald.path)
    with pytest.raises(ValueError, match="bad journal field name"):
        sender.send({name: "x"})
    sender.close()
    with pytest.raises(ValueError, match="bad journal field name"):
        StderrSink(io.StringIO()).send({name: "x"})


def test_good_field_names_pass() -> None:
    for name in ("MESSAGE", "COFFER_UID", "A", "A" * 64, "X_1"):
        check_field_name(name)


def test_a_missing_socket_drops_and_says_so(tmp_path: Path) -> None:
    sender = JournalSender(tmp_path / "nobody-here.sock")
    assert not sender.send({"MESSAGE": "lost"})
    assert not sender.send({"MESSAGE": "lost"})
    sender.close()


def test_a_full_journal_queue_drops_without_blocking(journald: FakeJournald) -> None:
    # Nobody reads: the receiver's queue fills; each send must return at once.
    sender = JournalSender(journald.path)
    results: list[bool] = []

    def flood() -> None:
        results.extend(sender.send({"MESSAGE": "m" * 1000}) for _ in range(2000))

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a send blocked on a full journal queue"
    assert results[0] is True
    assert False in results
    sender.close()


def test_stderr_sink_writes_the_message_as_one_line() -> None:
    out = io.StringIO()
    StderrSink(out).send({"MESSAGE": "load ok\nmodels/a", "COFFER_UID": 0})
    assert out.getvalue() == "cofferd.audit: load ok models/a\n"


def test_journal_stream_must_match_stderr(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as f:
        st = os.fstat(f.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())
        assert not stderr_is_journal({}, f.fileno())


def test_open_sink_picks_the_journal_only_under_journald(
    tmp_path: Path, journald: FakeJournald
) -> None:
    with (tmp_path / "err").open("w") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        sink = open_sink(env, path=journald.path, stderr=f)
        assert isinstance(sink, JournalSender)
        sink.close()
        assert isinstance(open_sink({}, path=journald.path, stderr=f), StderrSink)
        # Under journald, but its socket is missing: stderr still gets the line.
        missing = open_sink(env, path=tmp_path / "none.sock", stderr=f)
        assert isinstance(missing, StderrSink)
