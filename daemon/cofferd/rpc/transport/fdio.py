"""File objects over the fds callers pass.

The daemon never opens a path a caller names: it reads and writes only what
the caller handed over. These wrappers turn the ways such an fd can fail into
the error tree: the reader of a pipe going away is :class:`PeerGone` (no
noise in the log), a descriptor open the wrong way is :class:`BadRequest`, and
work stops between chunks once the call is cancelled.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import select
import stat
import time
from typing import TYPE_CHECKING

from cofferd.errors import BadRequest, PeerGone, ShuttingDown, TooLarge
from cofferd.rpc.dispatch.context import Call

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

#: Largest single write or read: bounds how long a cancel waits for the next check.
CHUNK = 1024 * 1024
#: A pipe this big lets one decrypted segment pass in one write.
PIPE_SIZE = 1024 * 1024
_POLL_MS = 200
#: Seconds between two checks for a caller who hung up while its data streams:
#: a hang-up stops the work within this, not at the stream's end.
HANGUP_CHECK = 0.25


def _wait(fd: int, event: int, call: Call) -> None:
    """Wait until ``fd`` is ready for ``event`` (a caller may hand a non-blocking fd)."""
    poller = select.poll()
    poller.register(fd, event)
    while not poller.poll(_POLL_MS):
        if call.cancel.is_set():
            raise ShuttingDown("cofferd is shutting down")


class _CallerFd(io.RawIOBase):
    """An fd the caller passed, owned by the call: closed exactly once."""

    def __init__(self, fd: int, call: Call) -> None:
        super().__init__()
        self._fd = fd
        self._call = call
        self._checked = time.monotonic()

    def _check_caller(self) -> None:
        """Every HANGUP_CHECK s: stop (PeerGone, logged "caller hung up") if the caller left."""
        now = time.monotonic()
        if now - self._checked >= HANGUP_CHECK:
            self._checked = now
            self._call.check()

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            # Closing our copy cannot fail in a way the caller can act on.
            with contextlib.suppress(OSError):
                os.close(self._fd)
        super().close()


class FdWriter(_CallerFd):
    """Writes into the caller's fd, which it owns and closes.

    A raw file: each :meth:`write` is one ``os.write`` of at most
    :data:`CHUNK` bytes and may take less; callers write everything with
    :func:`coffer.streams.write_all`, and each step checks for a cancel.
    """

    def __init__(self, fd: int, call: Call) -> None:
        super().__init__(fd, call)
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over pipe-max-size, or a bad fd that the first write reports
            pass

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        if self._call.cancel.is_set():
            raise ShuttingDown("cofferd is shutting down")
        self._check_caller()
        try:
            return os.write(self._fd, memoryview(data).cast("B")[:CHUNK])
        except BlockingIOError:
            _wait(self._fd, select.POLLOUT, self._call)
            return 0  # nothing taken yet: the caller's loop comes back
        except BrokenPipeError as exc:
            raise PeerGone("the caller closed its end of the pipe") from exc
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise BadRequest("the fd given to load is not open for writing") from exc
            raise BadRequest(f"cannot write to the fd given to load: {exc.strerror}") from exc


class FdReader(_CallerFd):
    """Reads the caller's fd to EOF, checking the announced size; owns and closes it.

    At EOF it refuses, before anyone can publish, when the byte count differs
    from ``expected`` or when the caller hung up: an upload cut short must never
    look complete.
    """

    def __init__(
        self, fd: int, call: Call, expected: int | None = None, limit: int | None = None
    ) -> None:
        super().__init__(fd, call)
        self._expected = expected
        self._limit = limit
        self.count = 0
        if limit is not None and expected is not None and expected > limit:
            raise TooLarge(f"the announced size is over max_upload_bytes ({limit} bytes)")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")[:CHUNK]
        while True:
            if self._call.cancel.is_set():
                raise ShuttingDown("cofferd is shutting down")
            self._check_caller()
            try:
                n = os.readv(self._fd, [view])
                break
            except BlockingIOError:
                _wait(self._fd, select.POLLIN, self._call)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise BadRequest("the fd given to upload is not open for reading") from exc
                raise BadRequest(f"cannot read the fd given to upload: {exc.strerror}") from exc
        self.count += n
        if self._limit is not None and self.count > self._limit:
            raise TooLarge(f"the upload is over max_upload_bytes ({self._limit} bytes)")
        if self._expected is not None and self.count > self._expected:
            raise BadRequest(f"more than the announced size of {self._expected} bytes came")
        if n == 0:
            self._at_eof()
        return n

    def _at_eof(self) -> None:
        if self._expected is not None and self.count != self._expected:
            raise BadRequest(
                f"the fd ended after {self.count} bytes, not the announced {self._expected}"
            )
        self._call.check()
