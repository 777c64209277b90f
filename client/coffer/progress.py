"""Progress of a transfer on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from coffer.streams import Progress


def mib(n: int) -> str:
    """``n`` bytes as MiB with one decimal, as the CLI shows sizes."""
    return f"{n / 2**20:.1f} MiB"


class ProgressLine:
    """A progress line on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.clock = clock
        self.start = clock()
        self.shown: float | None = None  # the first call draws
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.shown is not None and now - self.shown < 0.1:
            return
        self.shown = now
        rate = done / max(now - self.start, 1e-6) / 2**20
        of = f" of {mib(total)}" if total else ""
        print(f"\r\033[K{self.label}: {mib(done)}{of}, {rate:.0f} MiB/s", end="", file=sys.stderr)
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_on_terminal(label: str) -> Iterator[Progress | None]:
    """Progress on stderr only when stderr is a terminal, so logs and pipes stay clean."""
    if not sys.stderr.isatty():
        yield None
        return
    line = ProgressLine(label)
    try:
        yield line
    finally:
        line.close()
