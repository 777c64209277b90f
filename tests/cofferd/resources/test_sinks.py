"""The sinks of a load: the caller's fd, the inline buffer, the caller's memfd, nowhere."""

from __future__ import annotations

import ctypes
import fcntl
import io
import mmap
import os

import pytest

from cofferd.errors import BadRequest, TooLarge
from cofferd.resources.sinks import SEALS, BufferSink, MemfdSink, Nowhere, StreamSink

libc = ctypes.CDLL(None, use_errno=True)


def caller_memfd(size: int, *, allocate: bool = True, flags: int = -1) -> int:
    """A memfd as the client makes it: sealable, sized, every page allocated."""
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING if flags < 0 else flags)
    os.ftruncate(fd, size)
    if allocate and size:
        os.posix_fallocate(fd, 0, size)
    return fd


def test_memfd_checked_filled_and_sealed() -> None:
    fd = caller_memfd(10)
    sink = MemfdSink(os.dup(fd), max_bytes=10)
    sink.expect("models/x", 10)
    sink.write(memoryview(b"hello"))
    sink.write(memoryview(b"world"))
    sink.seal()
    sink.close()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
        assert os.pread(fd, 10, 0) == b"helloworld"
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)  # F_SEAL_SEAL: no change, even none
    finally:
        os.close(fd)


def test_memfd_over_the_cap_is_refused_before_anything() -> None:
    fd = caller_memfd(5)
    with pytest.raises(TooLarge, match="memfd_max_bytes"):
        MemfdSink(fd, max_bytes=4).expect("models/big", 5)
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == 0  # nothing was done to it
    os.close(fd)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: caller_memfd(8, allocate=False), "not fully allocated"),
        (lambda: caller_memfd(7), "holds 7 bytes"),
        (lambda: caller_memfd(8, flags=os.MFD_CLOEXEC), "cannot be sealed"),
        (lambda: os.open("/dev/null", os.O_RDWR), "not a memfd"),
        (lambda: os.pipe()[1], "not a memfd"),
    ],
)
def test_memfd_refused(make, match: str) -> None:
    fd = make()
    sink = MemfdSink(fd, max_bytes=1 << 20)
    with pytest.raises(BadRequest, match=match):
        sink.expect("models/x", 8)
    sink.close()


def test_memfd_opened_read_only_is_refused() -> None:
    fd = caller_memfd(8)
    ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    with pytest.raises(BadRequest, match="read-write"):
        MemfdSink(ro, max_bytes=8).expect("models/x", 8)
    os.close(ro)
    os.close(fd)


def test_memfd_already_sealed_against_writes_is_refused() -> None:
    fd = caller_memfd(8)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    with pytest.raises(BadRequest, match="sealed against writing"):
        MemfdSink(fd, max_bytes=8).expect("models/x", 8)
    os.close(fd)


def test_memfd_size_cannot_change_during_the_fill() -> None:
    fd = caller_memfd(8)
    MemfdSink(os.dup(fd), max_bytes=8).expect("models/x", 8)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 4)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 1 << 20)
    os.close(fd)


def test_memfd_with_a_writable_mapping_is_refused_at_the_seal() -> None:
    fd = caller_memfd(4096)
    mapping = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sink = MemfdSink(os.dup(fd), max_bytes=4096)
    sink.expect("models/x", 4096)
    sink.write(memoryview(bytes(4096)))
    with pytest.raises(BadRequest, match="writable shared mapping"):
        sink.seal()
    sink.close()
    assert not fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    mapping.close()
    os.close(fd)


def test_memfd_pages_punched_mid_fill_are_refused_and_released() -> None:
    size = 4 << 20
    fd = caller_memfd(size)
    sink = MemfdSink(os.dup(fd), max_bytes=size)
    sink.expect("models/x", size)
    sink.write(memoryview(bytes(1 << 20)))
    # The caller releases pages cofferd would then allocate (and be charged for).
    assert libc.fallocate(fd, 0x03, ctypes.c_long(2 << 20), ctypes.c_long(1 << 20)) == 0
    with pytest.raises(BadRequest, match="released mid-load"):  # checked before the next
        sink.write(memoryview(bytes(1 << 20)))
    sink.close()
    assert os.fstat(fd).st_blocks == 0  # every page gone, none left charged anywhere
    os.close(fd)


def test_buffer_refuses_past_its_cap_before_anything() -> None:
    sink = BufferSink(4)
    with pytest.raises(TooLarge, match="inline cap of 4"):
        sink.expect("models/x", 5)
    sink.expect("models/x", 4)
    sink.write(memoryview(b"ab"))
    assert sink.restart()
    sink.write(memoryview(b"abcd"))
    assert bytes(sink.getvalue()) == b"abcd"
    with pytest.raises(TooLarge):
        sink.write(memoryview(b"e"))


def test_stream_restarts_only_before_its_first_byte() -> None:
    out = io.BytesIO()
    sink = StreamSink(out)
    assert sink.restart()
    sink.write(memoryview(b"abc"))
    assert not sink.restart()
    assert out.getvalue() == b"abc"


def test_nowhere_counts() -> None:
    sink = Nowhere()
    sink.write(memoryview(b"abc"))
    assert sink.written == 3
