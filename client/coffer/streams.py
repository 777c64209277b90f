"""Moving a pipe along while a streaming call waits for its answer.

``load`` hands the daemon the write end of a pipe and drains the read end into
the caller's file (:class:`Drain`); ``upload`` hands it the read end and pumps
the caller's file into the write end (:class:`Pump`). Both are stepped by the
client's wait loop whenever their end is ready, so one thread moves the data
and watches the socket.

An error of the caller's own stream (``out.write``, ``src.read``), or a
KeyboardInterrupt, propagates out of ``step``: the client then closes the
socket *before* the pipe, so cofferd sees a caller that hung up, not a clean
EOF, and publishes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import selectors
import stat
from collections.abc import Callable
from typing import BinaryIO

#: What the write loops take (``collections.abc.Buffer`` once Python 3.12 is the floor).
ReadableBuffer = bytes | bytearray | memoryview

#: ``progress(done, total)``: bytes moved so far, and the total when known.
Progress = Callable[[int, int | None], None]

CHUNK = 1024 * 1024


class Stream:
    """One end of a pipe moved along while a streaming call waits for its answer."""

    def __init__(self) -> None:
        r, w = os.pipe()
        for fd in (r, w):
            # A bigger pipe means fewer wake-ups; the limit may refuse it, that's fine.
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
            except OSError:
                break
        self.mine, self.theirs = (r, w) if self.reads else (w, r)
        self.open = True

    reads = True

    def close_theirs(self) -> None:
        if self.theirs >= 0:
            os.close(self.theirs)
            self.theirs = -1

    def close(self) -> None:
        self.close_theirs()
        if self.open:
            self.open = False
            os.close(self.mine)

    def register(self, sel: selectors.BaseSelector) -> None:
        sel.register(self.mine, selectors.EVENT_READ if self.reads else selectors.EVENT_WRITE)

    def finish(self, sel: selectors.BaseSelector) -> None:
        if self.open:
            sel.unregister(self.mine)
            self.close()

    def pending_after_answer(self) -> bool:
        return False

    def answered(self, sel: selectors.BaseSelector, failed: bool) -> None:
        """The answer came; stop moving data unless more is still owed."""

    def step(self, sel: selectors.BaseSelector) -> None:
        raise NotImplementedError


class Drain(Stream):
    """load: pipe → ``out``."""

    reads = True

    def __init__(self, out: BinaryIO, progress: Progress | None) -> None:
        super().__init__()
        self.out = out
        self.progress = progress
        self.done = 0
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)

    def pending_after_answer(self) -> bool:
        # The daemon closes its end before it answers, so after a success
        # the rest of the pipe is ours to drain up to EOF.
        return self.open

    def answered(self, sel: selectors.BaseSelector, failed: bool) -> None:
        if failed:
            self.finish(sel)

    def step(self, sel: selectors.BaseSelector) -> None:
        n = os.readv(self.mine, [self.buf])
        if n == 0:
            self.finish(sel)
            return
        write_all(self.out, self.view[:n])
        self.done += n
        if self.progress is not None:
            self.progress(self.done, None)


class Pump(Stream):
    """upload: ``src`` → pipe."""

    reads = False

    def __init__(self, src: BinaryIO, total: int | None, progress: Progress | None) -> None:
        super().__init__()
        os.set_blocking(self.mine, False)
        self.src = src
        self.total = total
        self.progress = progress
        self.done = 0
        self.pending = memoryview(b"")

    def answered(self, sel: selectors.BaseSelector, failed: bool) -> None:
        self.finish(sel)

    def step(self, sel: selectors.BaseSelector) -> None:
        if not self.pending:
            # read1: what is there now, so a slow pipe streams instead of batching.
            read = getattr(self.src, "read1", self.src.read)
            chunk = read(CHUNK)
            if not chunk:
                self.finish(sel)
                return
            self.pending = memoryview(chunk)
        try:
            n = os.write(self.mine, self.pending)
        except BlockingIOError:
            return
        except BrokenPipeError:
            # The daemon stopped reading; its answer says why.
            self.finish(sel)
            return
        self.pending = self.pending[n:]
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def write_all(out: BinaryIO, data: ReadableBuffer) -> None:
    """``out.write`` until all of ``data`` is taken (a raw file may take part of it)."""
    _write_all(out.write, data)


def write_all_fd(fd: int, data: ReadableBuffer) -> None:
    """``os.write`` on ``fd`` until all of ``data`` is taken (a pipe may take part of it)."""
    _write_all(functools.partial(os.write, fd), data)


def _write_all(write: Callable[[memoryview], int | None], data: ReadableBuffer) -> None:
    # The one "write everything" loop of the client and the daemon.
    view = memoryview(data).cast("B")
    while view:
        wrote = write(view)
        if wrote is None:  # a non-blocking raw file that is full
            raise BlockingIOError(errno.EAGAIN, "the output must be a blocking file")
        view = view[wrote:]


def remaining(src: BinaryIO) -> int | None:
    """Bytes left in ``src`` if it is a regular file, else None."""
    try:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - src.tell())
    except (AttributeError, OSError, ValueError):
        return None
