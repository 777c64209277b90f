"""The call log: one line per call (method, outcome, peer, duration), off the serving threads.

Every call is logged, and a ``health`` call is about as cheap as a log record:
going through :mod:`logging` from each of up to a hundred connection threads
halved the daemon's calls per second (record creation, caller lookup, the
handler lock around a write). Like a web server's access log, this one takes
a fast path: a serving thread only enqueues a tuple; one writer thread
formats what has piled up and writes it with a single ``write``, in the same
form as cofferd's other log lines (journald priority prefix and no timestamp
under systemd, a timestamp otherwise). It never sees params.

An audited call's line is its audit record's message instead (see
:mod:`cofferd.rpc.dispatch.observer`): one line per call either way.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

from coffer.streams import write_all_fd

_Entry = tuple[float, str, str, object, float]
_STOP = (0.0, "", "", None, 0.0)
# The outcome of an entry that is a whole line already: (at, text, _LINE, priority, 0).
_LINE = "\0line"
_LEVEL = {3: "ERROR", 4: "WARNING", 6: "INFO"}
#: Lines formatted and written at once: about 0.1 ms of work.
_BATCH = 64


class CallLog:
    """Collects call lines and writes them to ``fd`` from one thread."""

    def __init__(
        self,
        fd: int,
        *,
        journal: bool,
        wall_clock: Callable[[], float] = time.time,
        linger: float = 0.05,
    ) -> None:
        self._fd = fd
        self._journal = journal
        self._wall = wall_clock
        self._linger = linger
        self._queue: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._second = -1
        self._stamp = ""

    def start(self) -> CallLog:
        self._thread = threading.Thread(target=self._run, name="call-log", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write out what is queued and end the writer."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def record(self, method: str, outcome: str, peer: object, seconds: float) -> None:
        self._queue.put((self._wall(), method, outcome, peer, seconds))

    def record_line(self, text: str, priority: int = 6, prefix: str = "cofferd.audit") -> None:
        """A call's line given whole (an audit record's message), with its syslog priority."""
        self._queue.put((self._wall(), f"{prefix}: {text}", _LINE, priority, 0.0))

    def _run(self) -> None:
        while True:
            entries = [self._queue.get()]
            # Let lines pile up a moment: waking for every call would cost the
            # serving threads a GIL hand-over each.
            time.sleep(self._linger)
            while True:  # take whatever piled up meanwhile: one write for all of it
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(e is _STOP for e in entries)
            lines = [e for e in entries if e is not _STOP]
            for at in range(0, len(lines), _BATCH):
                if at:
                    # Formatting holds the GIL: in bites, the serving threads
                    # get it between them instead of waiting out a whole pile.
                    time.sleep(0)
                text = "".join(map(self._line, lines[at : at + _BATCH]))
                self._write(text.encode("utf-8", "replace"))
            if stop:
                return

    def _line(self, entry: _Entry) -> str:
        at, method, outcome, peer, seconds = entry
        priority = 6
        if outcome is _LINE:
            body = method.replace("\n", " ") + "\n"
            priority = peer if isinstance(peer, int) else 6
        else:
            body = f"cofferd.call: {method} {outcome} {peer} {seconds * 1000:.1f}ms\n"
        if self._journal:
            return f"<{priority}>{body}"
        return f"{self._timestamp(at)} {_LEVEL.get(priority, 'INFO')} {body}"

    def _timestamp(self, at: float) -> str:
        # The form of logging's default asctime: "2026-01-31 12:00:00,123".
        second = int(at)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((at - second) * 1000):03d}"

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # stderr is gone: nothing left to tell
            write_all_fd(self._fd, data)
