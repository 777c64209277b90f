"""A sealed memfd as the output of ``load``: plaintext that never touches a file system.

:class:`MemfdSink` is made empty; ``load`` calls :meth:`MemfdSink.reserve` with
the plaintext size the upstream announced (before any byte is decrypted),
decrypts straight into :attr:`MemfdSink.view` (the memfd's shared mapping)
and then :meth:`MemfdSink.seal`: the mapping goes, the four seals go on, and
the fd is the caller's to pass on. Once ``F_SEAL_WRITE`` is on, nobody (not
cofferd, not a receiver) can change a byte, and ``F_SEAL_SEAL`` keeps it so.

Memory: the pages are shmem, charged to the memory cgroup that first touched
them, i.e. cofferd's service, and they stay charged there for as long as any
process keeps the fd or a mapping open (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os

from cofferd.errors import TooLarge

#: All four: no write, no shrink, no grow, and no change to the seals.
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class MemfdSink:
    """One memfd being filled; :meth:`close` releases whatever was not handed out."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self._name = name
        self._max = max_bytes
        self._fd = -1
        self._map: mmap.mmap | None = None
        self.view = memoryview(bytearray())  # writable: an empty plaintext still "decrypts into" it
        self.size = 0

    def check(self, size: int) -> None:
        """:class:`TooLarge` past the cap, before anything is allocated or fetched."""
        if size > self._max:
            raise TooLarge(
                f"resource {self._name} has {size} bytes, over memfd_max_bytes of {self._max};"
                " load it into a pipe instead"
            )

    def reserve(self, size: int) -> None:
        """Make the memfd ``size`` bytes long and map it writable."""
        self.check(size)
        self.close()
        # CLOEXEC: a Docker or other child of cofferd must never inherit it.
        self._fd = os.memfd_create(self._name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self._fd, size)
        self.size = size
        if size:
            # No MAP_POPULATE: the first touch of each page happens in
            # decrypt_into, spread over the workers, instead of up front here.
            self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.view = memoryview(self._map)

    def seal(self) -> int:
        """Unmap, seal, and hand the fd over (the caller closes it from now on)."""
        self._unmap()
        fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, SEALS)
        fd, self._fd = self._fd, -1
        return fd

    def _unmap(self) -> None:
        # A writable shared mapping left behind would make F_SEAL_WRITE fail (EBUSY).
        self.view.release()
        self.view = memoryview(bytearray())
        if self._map is not None:
            self._map.close()
            self._map = None

    def close(self) -> None:
        self._unmap()
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # nothing left to release
                os.close(self._fd)
            self._fd = -1
