"""What the daemon's boundaries with foreign libraries (docker, requests) share.

- :class:`WatchedBody`: an iterable handed to a library as a streamed request
  body. When it raises, the library turns that into an error of its own (a
  cut connection, a chunked-encoding error) or even answers normally; the
  body's own exception (a :class:`cofferd.errors.DecryptionError`, a
  :class:`cofferd.errors.PeerGone`, the caller's bad input) is what the
  caller must see, unchanged.
- :func:`printable`: a foreign party's words (an engine's or upstream's error
  text) made fit for our log and the caller's error: printable and short.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")


class WatchedBody(Generic[_T]):
    """Wraps ``source``; inside :meth:`source_errors_first`, its exception wins."""

    def __init__(self, source: Iterable[_T]) -> None:
        self._source = source
        self._error: BaseException | None = None

    def chunks(self) -> Iterator[_T]:
        """The generator to hand to the library (once)."""
        try:
            yield from self._source
        except BaseException as exc:  # re-raised by source_errors_first, not swallowed
            self._error = exc
            raise

    @contextlib.contextmanager
    def source_errors_first(self) -> Iterator[None]:
        """Around the library call: the body's own exception replaces whatever came of it.

        Also after a normal return: a library that answered before the body
        ended still leaves the body's failure to report.
        """
        try:
            yield
        except Exception:
            if self._error is not None:
                # from None: what the library made of it says nothing more.
                raise self._error from None
            raise
        if self._error is not None:
            raise self._error


def printable(value: object, limit: int = 300) -> str:
    """``str(value)``, cut to ``limit`` characters, each unprintable one as ``?``."""
    text = str(value)
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


__all__ = ["WatchedBody", "printable"]
