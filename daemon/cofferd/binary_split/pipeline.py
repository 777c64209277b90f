"""Segment pipeline: read fixed-size segments, transform them on threads, in order.

The format (``stream``) says what a segment is; this module only moves them:
it reads each segment into a reused buffer, reads one more ahead to learn
whether the current one is the last, transforms up to ``workers`` segments at
once into reused output buffers (cryptography's AEAD calls release the GIL, so
two cores help; the caller's thread is one of the workers), and yields the
outputs strictly in order. An output is
yielded only if its transform returned; the first exception stops the
pipeline and propagates, so what was yielded before is a prefix of the whole.
Memory: ``workers + 2`` pairs of segment buffers, whatever the stream's size.

Sources are :data:`Reader` functions: over a file or pipe (``readinto`` into
the segment buffers), over chunks, and over a prefix followed by either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, BinaryIO

Reader = Callable[[memoryview], memoryview]
"""Given a scratch buffer of the wanted length, returns a view of the next bytes.

The view is the buffer filled; it is shorter than asked only at end of input.
"""

Transform = Callable[[int, bool, memoryview, memoryview], None]
"""(segment number, is last, input, output) -> None, or raises."""


def file_reader(src: BinaryIO) -> Reader:
    """A :data:`Reader` over a binary file, pipe or socket file, until EOF."""
    readinto: Callable[[memoryview], int | None] | None = getattr(src, "readinto", None)

    def read(view: memoryview) -> memoryview:
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
        return view[:got]

    return read


def chunk_reader(chunks: Iterable[bytes]) -> Reader:
    """A :data:`Reader` over an iterable of bytes-like chunks of any sizes."""
    it = iter(chunks)
    rest = memoryview(b"")

    def read(view: memoryview) -> memoryview:
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
        return view[:got]

    return read


def prefixed(prefix: bytes, inner: Reader) -> Reader:
    """A :data:`Reader` over ``prefix`` and then ``inner``'s source."""
    rest = memoryview(prefix)

    def read(view: memoryview) -> memoryview:
        nonlocal rest
        if not rest:
            return inner(view)
        n = min(len(rest), len(view))
        view[:n] = rest[:n]
        rest = rest[n:]
        if n == len(view):
            return view
        more = inner(view[n:])
        view[n : n + len(more)] = more  # a copy only at the seam (or onto itself)
        return view[: n + len(more)]

    return read


class _Inline(Executor):
    """One worker: run each transform at once, on the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # kept for the consumer, as a pool does
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
    out_size = size + max(delta, 0)
    free: deque[Slot] = deque(
        (memoryview(bytearray(size)), memoryview(bytearray(out_size))) for _ in range(workers + 2)
    )
    pending: deque[tuple[Future[None], Slot, memoryview]] = deque()
    # The caller's thread takes every ``workers``-th segment itself and
    # ``workers - 1`` threads the others: fewer hand-offs than a pool of
    # ``workers``, and no more busy threads than cores (it measured 10-20%
    # faster than a full pool on a loaded machine).
    inline = _Inline()
    pool = (
        ThreadPoolExecutor(workers - 1, thread_name_prefix="coffer-segment")
        if workers > 1
        else None
    )

    def oldest() -> Iterator[memoryview]:
        future, slot, out = pending.popleft()
        future.result()
        yield out
        free.append(slot)  # the consumer is done with the view

    try:
        slot = free.popleft()
        data = read(slot[0][:first_size])
        index, cap = 0, first_size
        while True:
            last = len(data) < cap  # a short read means EOF was reached
            if not last:
                if not free:
                    yield from oldest()
                nxt = free.popleft()
                ahead = read(nxt[0][:size])
                last = not ahead
                if last:
                    free.append(nxt)
            olen = max(len(data) + delta, 0)
            out = slot[1][:olen]
            runner: Executor = pool if pool is not None and index % workers else inline
            future = runner.submit(transform, index, last, data, out)
            pending.append((future, slot, out))
            if last:
                break
            slot, data, index, cap = nxt, ahead, index + 1, size
        while pending:
            yield from oldest()
    finally:
        for future, _, _ in pending:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
