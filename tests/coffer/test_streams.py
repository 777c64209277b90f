"""The one "write everything" loop, over a file object and over a raw fd."""

from __future__ import annotations

import io
import os
import threading

import pytest

from coffer.streams import write_all, write_all_fd


class Trickle(io.RawIOBase):
    """A raw file that takes at most five bytes per write."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
        chunk = bytes(memoryview(data)[:5])
        self.written += chunk
        return len(chunk)


class Full(io.RawIOBase):
    """A non-blocking raw file with no room: write returns None."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> None:  # type: ignore[no-untyped-def,override]
        return None


def test_write_all_finishes_partial_writes() -> None:
    dst = Trickle()
    write_all(dst, memoryview(bytes(range(23))))  # type: ignore[arg-type]
    assert dst.written == bytes(range(23))


def test_write_all_refuses_a_full_non_blocking_file() -> None:
    with pytest.raises(BlockingIOError, match="blocking file"):
        write_all(Full(), b"data")  # type: ignore[arg-type]


def test_write_all_fd_fills_a_pipe_past_its_size() -> None:
    # 1 MiB through a pipe of 64 KiB: os.write takes part of it at a time.
    data = os.urandom(1 << 20)
    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        with os.fdopen(r, "rb") as src:
            while chunk := src.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_all_fd(w, data)
    finally:
        os.close(w)
        reader.join(timeout=30)
    assert got == data
