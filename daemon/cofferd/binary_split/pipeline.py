"""Segment pipeline: read fixed-size segments, transform them on threads, in order.

The format (``stream``) says what a segment is; this module only moves them:
it reads each segment into a reused buffer, reads one more ahead to learn
whether the current one is the last, transforms up to ``workers`` segments at
once into reused output buffers (cryptography's AEAD calls release the GIL, so
two cores help), and yields the outputs strictly in order. An output is
yielded only if its transform returned; the first exception stops the
pipeline and propagates, so what was yielded before is a prefix of the whole.
Memory: ``workers + 2`` pairs of segment buffers, whatever the stream's size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, BinaryIO

Reader = Callable[[memoryview], int]
"""Fills the view from the source; returns fewer bytes only at end of input."""

Transform = Callable[[int, bool, memoryview, memoryview], None]
"""(segment number, is last, input, output) -> None, or raises."""


def file_reader(src: BinaryIO) -> Reader:
    """A :data:`Reader` over a binary file, pipe or socket file, until EOF."""
    readinto: Callable[[memoryview], int | None] | None = getattr(src, "readinto", None)

    def read(view: memoryview) -> int:
        got = 0
        while got < len(view):
            if readinto is not None:
                n = readinto(view[got:])
                if n is None:
                    raise BlockingIOError("the source is non-blocking and not ready")
            else:
                data = src.read(len(view) - got)
                n = len(data)
                view[got : got + n] = data
            if n == 0:
                break
            got += n
        return got

    return read


def chunk_reader(chunks: Iterable[bytes]) -> Reader:
    """A :data:`Reader` over an iterable of bytes-like chunks of any sizes."""
    it = iter(chunks)
    rest = memoryview(b"")

    def read(view: memoryview) -> int:
        nonlocal rest
        got = 0
        while got < len(view):
            if not rest:
                # Drop our view first: a producer may reuse (resize) its buffer.
                rest = memoryview(b"")
                chunk = next(it, None)
                if chunk is None:
                    break
                rest = memoryview(chunk).cast("B")
            n = min(len(view) - got, len(rest))
            view[got : got + n] = rest[:n]
            rest = rest[n:]
            got += n
        return got

    return read


def write_all(dst: BinaryIO, view: memoryview) -> None:
    """Write all of ``view``: a raw file or pipe may take less per call."""
    while view:
        n: int | None = dst.write(view)
        if n is None:
            raise BlockingIOError("the destination is non-blocking and full")
        view = view[n:]


class _Inline(Executor):
    """One worker: run each transform at once, on the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # kept for the consumer, like a pool does
            future.set_exception(exc)
        return future


def segments(
    read: Reader,
    *,
    first_size: int,
    size: int,
    delta: int,
    transform: Transform,
    workers: int,
) -> Iterator[memoryview]:
    """Transformed segments in order; each view is valid until the next is asked for.

    Segment 0 is ``first_size`` input bytes, the others ``size``; the last one
    is whatever remains (possibly nothing) and is the one after which the
    source is at EOF. An output is ``delta`` bytes longer than its input.
    """
    Slot = tuple[memoryview, memoryview]  # (input buffer, output buffer)
    free: deque[Slot] = deque(
        (memoryview(bytearray(size)), memoryview(bytearray(size + max(delta, 0))))
        for _ in range(workers + 2)
    )
    pending: deque[tuple[Future[None], Slot, int]] = deque()
    executor: Executor = ThreadPoolExecutor(workers) if workers > 1 else _Inline()

    def oldest() -> Iterator[memoryview]:
        future, slot, olen = pending.popleft()
        future.result()
        yield slot[1][:olen]
        free.append(slot)  # the consumer is done with the view

    try:
        slot = free.popleft()
        n = read(slot[0][:first_size])
        index, cap = 0, first_size
        while True:
            last = n < cap  # a short read means EOF was reached
            if not last:
                if not free:
                    yield from oldest()
                nxt = free.popleft()
                m = read(nxt[0][:size])
                last = m == 0
                if last:
                    free.append(nxt)
            olen = max(n + delta, 0)
            future = executor.submit(transform, index, last, slot[0][:n], slot[1][:olen])
            pending.append((future, slot, olen))
            if last:
                break
            slot, n, index, cap = nxt, m, index + 1, size
        while pending:
            yield from oldest()
    finally:
        for future, _, _ in pending:
            future.cancel()
        executor.shutdown(wait=True)
