"""The memfd sink: sized, written through its mapping, sealed; refused past its cap."""

from __future__ import annotations

import fcntl
import os

import pytest

from cofferd.errors import TooLarge
from cofferd.resources.memfd import SEALS, MemfdSink


def test_reserve_write_seal() -> None:
    sink = MemfdSink("coffer:test/x", max_bytes=10)
    sink.reserve(5)
    sink.view[:] = b"hello"
    fd = sink.seal()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
        assert os.pread(fd, 10, 0) == b"hello"
        assert not os.get_inheritable(fd)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)  # F_SEAL_SEAL: no change, even none
    finally:
        os.close(fd)
    sink.close()  # after seal: nothing left to close, and no error


def test_over_the_cap_is_refused_before_anything_is_made() -> None:
    sink = MemfdSink("coffer:test/big", max_bytes=4)
    before = os.listdir("/proc/self/fd")
    with pytest.raises(TooLarge, match="memfd_max_bytes"):
        sink.reserve(5)
    assert os.listdir("/proc/self/fd") == before


def test_close_without_seal_releases_the_memfd() -> None:
    sink = MemfdSink("coffer:test/y", max_bytes=1 << 20)
    sink.reserve(1 << 20)
    assert _memfds("coffer:test/y")  # the memfd, and the mapping's own duplicate
    sink.close()
    assert _memfds("coffer:test/y") == []
    assert len(sink.view) == 0


def _memfds(name: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            continue
        if target.startswith(f"/memfd:{name}"):
            found.append(target)
    return found
