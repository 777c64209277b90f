"""A memfd the caller makes for ``load_memfd``, then checked sealed before it is trusted.

The caller makes the memfd (:meth:`Memfd.create`: ``memfd_create`` with
``MFD_ALLOW_SEALING``, ``ftruncate`` to the plaintext size, ``fallocate`` of
every page), so its pages are charged to the caller's memory cgroup, not to
cofferd's; it passes the fd with ``load_memfd``, and cofferd fills and seals
it. Before anything reads it, :meth:`Memfd.check_sealed` checks that it is
what it must be: seals that forbid writing, shrinking, growing and changing
the seals, and the size announced. Without ``F_SEAL_WRITE`` someone holding
another copy of the fd could change the bytes under the reader; without
``F_SEAL_SHRINK`` a mapping could fault (SIGBUS) when the file is cut.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from io import FileIO
from types import TracebackType

from coffer.errors import ProtocolError

#: The seals a trusted memfd carries, all of them.
REQUIRED_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def check_sealed(fd: int, size: int) -> None:
    """:class:`ProtocolError` unless ``fd`` is a memfd of ``size`` bytes with all four seals."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        actual = os.fstat(fd).st_size
    except OSError as exc:
        # EINVAL: not a file that supports seals (a pipe, a regular file).
        raise ProtocolError(f"cofferd's fd is not a sealed memfd: {exc.strerror}") from exc
    missing = REQUIRED_SEALS & ~seals
    if missing:
        raise ProtocolError(f"cofferd's memfd lacks seals {missing:#x}: refused")
    if actual != size:
        raise ProtocolError(f"cofferd's memfd holds {actual} bytes, not the {size} announced")


class Memfd:
    """A resource's plaintext in a sealed memfd; the fd is this object's to close."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    @classmethod
    def create(cls, name: str, size: int) -> Memfd:
        """A sealable memfd of ``size`` bytes, every page allocated (charged to this process).

        CLOEXEC: a child sees it only when handed it (``pass_fds``).
        """
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            if size:
                os.posix_fallocate(fd, 0, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size)

    def check_sealed(self) -> None:
        """:class:`ProtocolError` unless cofferd sealed it (see :func:`check_sealed`)."""
        check_sealed(self.fd, self.size)

    @property
    def path(self) -> str:
        """``/proc/self/fd/N``: a path this process, or a child given the fd, can open."""
        return f"/proc/self/fd/{self.fd}"

    def file(self) -> FileIO:
        """A new read-only file object at offset 0 (its own open file, its own offset)."""
        return FileIO(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC), "rb", closefd=True)

    def mmap(self) -> mmap.mmap:
        """A read-only shared mapping of the whole plaintext (an empty one cannot be mapped)."""
        if self.size == 0:
            raise ValueError("an empty memfd cannot be mapped")
        return mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):  # already gone: nothing to release
                os.close(fd)

    def __enter__(self) -> Memfd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
