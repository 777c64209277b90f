"""Where a load's plaintext goes: one :class:`Sink` per delivery, each choosing its route.

A load decides first (which version, online or offline), reads the big part
(the managed cache), and delivers into one of these:

- :class:`StreamSink`: the caller's fd (a pipe, a file), written in order
  from the decryption's reused segment buffers;
- :class:`BufferSink`: the inline answer, refused past its cap before any
  byte is fetched, filled in a buffer of exactly the announced size;
- :class:`MemfdSink`: a memfd the *caller* made and sized, so its pages are
  charged to the caller's memory cgroup, not cofferd's; checked, filled with
  ``os.pwrite`` from the reused segment buffers by the decrypt workers, each
  segment at its offset (no mapping: 4 KiB page faults cost more than the
  copy), then sealed;
- :class:`Nowhere`: ``pull``'s verification pass.

Every sink learns the plaintext size before any byte is fetched
(:meth:`Sink.expect`: a cap, a memfd's size), takes the verified segments in
order (``write``, all of each), and says whether a failed read may start over
(:meth:`Sink.restart`): a sink whose bytes are not yet handed out may.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import stat
import threading
from typing import BinaryIO, Protocol

from coffer.streams import write_all
from cofferd.errors import BadRequest, TooLarge

#: All four: no write, no shrink, no grow, and no change to the seals.
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
#: Put on when the memfd is checked: its size is fixed for the fill.
_SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
#: Bytes written between two checks that the memfd is still fully allocated.
_CHECK_EVERY = 1 << 20


class Sink(Protocol):
    """What a load delivers into; see the module docstring."""

    written: int

    def expect(self, name: str, size: int) -> None:
        """``size`` plaintext bytes of ``name`` will come: refuse now if they cannot."""
        ...

    def write(self, data: memoryview, /) -> int:
        """Take all of ``data`` (one verified segment); returns its length."""
        ...

    def restart(self) -> bool:
        """Start over from the first byte if nothing was handed out; False if it was."""
        ...


class StreamSink:
    """The caller's file: written in order; once a byte left, no start-over.

    Errors of the file propagate as the file raises them: the RPC layer's
    file over a caller's fd translates its OSError once, there.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.written = 0

    def expect(self, name: str, size: int) -> None:
        pass

    def write(self, data: memoryview, /) -> int:
        write_all(self._out, data)
        self.written += len(data)
        return len(data)

    def restart(self) -> bool:
        return self.written == 0


class BufferSink:
    """The inline answer: at most ``cap`` bytes, held in memory until the answer goes."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._buffer = bytearray()
        self.written = 0

    def expect(self, name: str, size: int) -> None:
        if size > self._cap:
            raise TooLarge(
                f"resource {name} has {size} bytes, over the inline cap of {self._cap};"
                " pass an fd instead"
            )
        self._buffer = bytearray(size)

    def write(self, data: memoryview, /) -> int:
        end = self.written + len(data)
        if end > len(self._buffer):
            raise TooLarge(f"the resource is over its announced {len(self._buffer)} bytes")
        self._buffer[self.written : end] = data
        self.written = end
        return len(data)

    def restart(self) -> bool:
        self.written = 0
        return True

    def getvalue(self) -> memoryview:
        return memoryview(self._buffer)[: self.written]


class Nowhere:
    """``pull``'s sink: every verified byte counted, none kept."""

    def __init__(self) -> None:
        self.written = 0

    def expect(self, name: str, size: int) -> None:
        pass

    def write(self, data: memoryview, /) -> int:
        self.written += len(data)
        return len(data)

    def restart(self) -> bool:
        self.written = 0
        return True


class MemfdSink:
    """A memfd the caller made, sized and allocated: checked, filled, then :meth:`seal`\\ ed.

    The caller creates it (``memfd_create`` with ``MFD_ALLOW_SEALING``), sets
    its size to the resource's plaintext size and allocates every page
    (``fallocate``), so the pages are charged to the caller's cgroup; it
    passes the fd open read-write. :meth:`expect` refuses, with
    :class:`BadRequest`, anything else: not a memfd, not sealable (or already
    sealed), the wrong size, pages not allocated. It then seals the size
    (no shrink, no grow) for the fill. A memfd whose pages were punched out
    during the fill is refused (and emptied) rather than filled with pages
    cofferd would pay for. :meth:`seal` adds the write and seal seals; a
    writable shared mapping somewhere makes that fail (EBUSY): refused too.
    cofferd closes its copy of the fd in any case; nothing is sent back.
    """

    def __init__(self, fd: int, max_bytes: int) -> None:
        self._fd = fd
        self._max = max_bytes
        self._blocks = 0
        self._lock = threading.Lock()  # the decrypt workers write at once
        self._unchecked = 0
        self.written = 0

    def expect(self, name: str, size: int) -> None:
        if size > self._max:
            raise TooLarge(
                f"resource {name} has {size} bytes, over memfd_max_bytes of {self._max};"
                " load it into a pipe instead"
            )
        fd = self._fd
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            st = os.fstat(fd)
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise BadRequest(f"the fd given to load_memfd is not a memfd: {exc.strerror}") from exc
        if not target.startswith("/memfd:") or not stat.S_ISREG(st.st_mode):
            raise BadRequest("the fd given to load_memfd is not a memfd")
        if mode != os.O_RDWR:
            raise BadRequest("the memfd given to load_memfd must be open read-write")
        if seals & fcntl.F_SEAL_SEAL:
            raise BadRequest(
                "the memfd given to load_memfd cannot be sealed (made without"
                " MFD_ALLOW_SEALING, or sealed already)"
            )
        if seals & (fcntl.F_SEAL_WRITE | getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0)):
            raise BadRequest("the memfd given to load_memfd is sealed against writing")
        if st.st_size != size:
            raise BadRequest(
                f"the memfd given to load_memfd holds {st.st_size} bytes; resource {name}"
                f" has {size}: size it to that and allocate it"
            )
        self._blocks = _blocks_for(size)
        if st.st_blocks < self._blocks:
            raise BadRequest(
                "the memfd given to load_memfd is not fully allocated: fallocate it, so"
                " its pages are charged to the caller"
            )
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SIZE_SEALS)
        except OSError as exc:
            raise BadRequest(f"cannot seal the memfd's size: {exc.strerror}") from exc

    def write(self, data: memoryview, /) -> int:
        self.write_at(data, self.written)
        return len(data)

    def write_at(self, data: memoryview, offset: int, /) -> None:
        """One verified segment at its place (``pwrite``: no mapping, no page faults here)."""
        with self._lock:
            check = self._unchecked >= _CHECK_EVERY
            if check:
                self._unchecked = 0
        if check:
            self._check_allocated()
        view = data
        at = offset
        while view:
            n = os.pwrite(self._fd, view, at)
            at += n
            view = view[n:]
        with self._lock:
            self.written += len(data)
            self._unchecked += len(data)

    def restart(self) -> bool:
        self.written = 0
        return True

    def _check_allocated(self) -> None:
        if os.fstat(self._fd).st_blocks < self._blocks:
            # Whatever cofferd wrote into holes would be charged to it: drop every page.
            with contextlib.suppress(OSError):
                _punch(self._fd)
            raise BadRequest("pages of the memfd given to load_memfd were released mid-load")

    def seal(self) -> None:
        """Fix the bytes for good: the write and seal seals on top of the size seals."""
        self._check_allocated()
        try:
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        except OSError as exc:
            raise BadRequest(
                f"cannot seal the memfd given to load_memfd ({exc.strerror}): a writable"
                " shared mapping of it exists somewhere"
            ) from exc

    def close(self) -> None:
        """Close cofferd's copy of the caller's fd (the caller keeps its own)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _blocks_for(size: int) -> int:
    """512-byte blocks a fully allocated shmem file of ``size`` bytes holds, at least."""
    page = os.sysconf("SC_PAGESIZE")
    return -(-size // page) * (page // 512)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _punch(fd: int) -> None:
    """Release every page of ``fd`` (its size kept)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = os.fstat(fd).st_size
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
