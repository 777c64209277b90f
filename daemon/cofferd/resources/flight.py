"""One download of a big part into the cache, driven by a thread of its own.

A cold load does not fetch the big part itself: it starts (or joins) a
:class:`Flight`, whose thread writes the CDN's bytes into a temporary file in
the cache, and reads that file as it grows (:class:`Follower`). So:

- one download per resource version, however many callers want it at once;
- a caller who stops reading delays only itself: the download is paced by
  the CDN and the disk, never by a caller's pipe, and each follower reads the
  file at its own pace (the kernel's page cache, not this process's memory,
  holds what the slowest one has yet to read);
- download, disk write and decryption overlap, on different threads.

Under a signed release (docs/trust.md) the flight first fetches the segment
manifest, then writes the CDN's bytes one verified chunk at a time
(:func:`cofferd.resources.segments.verified`): followers only ever see bytes
of whole chunks whose digest the publisher signed, and a chunk that differs
ends the download (the temporary file removed, nothing cached, followers
told: rule ``segment``). The cost is one SHA-256 pass over the big part.

Nothing enters the cache unauthenticated, and nothing is hashed twice: the
file is renamed into place once the announced number of bytes arrived and a
follower decrypted all of it with authentication (every AES-GCM tag
checked). If no follower finishes that pass within ``verify_wait`` (they all
hung up, or are slow), the flight's thread makes the pass itself, to nowhere.

When the disk fills up mid-download, the temporary file is removed at once
and the flight becomes *uncacheable*: each follower reads what it can from
its own open descriptor of the (unlinked) file, then fetches the rest from
the CDN itself with a range request. The loads succeed; nothing partial stays.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from coffer.streams import write_all_fd
from cofferd.binary_split.pipeline import Reader, chunk_reader
from cofferd.binary_split.stream import decrypt_file, resource_associated_data
from cofferd.errors import CofferError, CorruptData, DecryptionError, UpstreamUnavailable
from cofferd.resources.segments import SignedSegments, check_manifest, verified
from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

#: Seconds a complete download waits for a follower's authentication pass
#: before the flight's thread makes one of its own.
VERIFY_WAIT = 10.0
#: Longest single wait of a follower for more bytes; it then looks again
#: (the download's own progress is bounded by the upstream timeout).
POLL = 1.0


class BigSource(Protocol):
    """What a flight needs of the upstream client: the CDN download."""

    def iter_big(self, url: str, size: int, offset: int = 0) -> Iterator[bytes]: ...

    def manifest(self, folder: str, name: str, signed: SignedSegments) -> bytes:
        """The segment manifest of a signed version (fetched on cold loads only)."""
        ...


class State(enum.Enum):
    RUNNING = "running"  # bytes still arriving
    COMPLETE = "complete"  # all bytes in the temporary file, not yet in place
    DONE = "done"  # renamed into the cache
    UNCACHEABLE = "uncacheable"  # no room: followers fetch the rest themselves
    FAILED = "failed"  # the download failed: followers raise ``error``


class Flight:
    """A download in progress; see the module docstring.

    ``install(tmp)`` puts the authenticated file in place (called on the
    flight's thread); ``finished(flight)`` is called once it ends, whatever
    the outcome, after which no new follower may join.
    """

    def __init__(
        self,
        info: ResourceInfo,
        client: BigSource,
        tmp: tuple[int, Path],
        install: Callable[[Path], None],
        finished: Callable[[Flight], None],
        *,
        verify_wait: float = VERIFY_WAIT,
        segments: SignedSegments | None = None,
    ) -> None:
        self.info = info
        #: The signed chunk digests every byte is checked against (None: trust off).
        self.segments = segments
        self.manifest = b""
        self._client = client
        self._fd, self._tmp = tmp
        self._read_fd = os.open(self._tmp, os.O_RDONLY | os.O_CLOEXEC)
        self._install = install
        self._finished = finished
        self._verify_wait = verify_wait
        self._cond = threading.Condition()
        self.written = 0
        self.state = State.RUNNING
        self.error: CofferError | None = None
        self._verified = False
        self._corrupt = False
        self._followers = 0
        self._thread = threading.Thread(
            target=self._run, name=f"download-{info.folder}/{info.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    # -- the flight's thread -------------------------------------------------

    def _run(self) -> None:
        info = self.info
        raw = chunks = self._client.iter_big(info.big_url, info.big_size)
        try:
            if self.segments is not None:
                self.manifest = check_manifest(
                    self._client.manifest(info.folder, info.name, self.segments), self.segments
                )
                chunks = verified(chunks, self.manifest, self.segments)
            if self._download(chunks):
                self._wait_for_verification()
                with self._cond:  # not after a follower found the bytes bad
                    self._check_corrupt()
                    self._install(self._tmp)
                    self.state = State.DONE
                    self._cond.notify_all()
        except CofferError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: followers must still not wait forever
            log.exception("download of %s/%s failed", info.folder, info.name)
            self._fail(UpstreamUnavailable(f"the download failed: {type(exc).__name__}"))
        finally:
            for stream in (chunks, raw):
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            if self.state is not State.DONE:
                with contextlib.suppress(FileNotFoundError):
                    self._tmp.unlink()
            self._finished(self)
            os.close(self._read_fd)

    def _download(self, chunks: Iterator[bytes]) -> bool:
        """Write every chunk; False if the disk cannot take it (uncacheable)."""
        for chunk in chunks:
            try:
                write_all_fd(self._fd, chunk)
            except OSError as exc:
                log.warning(
                    "cannot cache %s/%s (%s); its loads stream from the CDN",
                    self.info.folder,
                    self.info.name,
                    exc.strerror,
                )
                with contextlib.suppress(FileNotFoundError):
                    self._tmp.unlink()  # at once: followers keep their descriptors
                self._set(State.UNCACHEABLE)
                return False
            with self._cond:
                self._check_corrupt()
                self.written += len(chunk)
                self._cond.notify_all()
        if self.written != self.info.big_size:
            raise CorruptData("the CDN served fewer bytes than the big part has")
        self._set(State.COMPLETE)
        return True

    def _wait_for_verification(self) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._verified or self._corrupt or self._followers == 0,
                timeout=self._verify_wait,
            )
            self._check_corrupt()
            if self._verified:
                return
        # Nobody finished the pass: make it here, to nowhere.
        ad = resource_associated_data(self.info.folder, self.info.name)
        with open(os.dup(self._read_fd), "rb", buffering=0, closefd=True) as big:
            try:
                decrypt_file(big, None, self.info.key, ad, prefix=self.info.small)
            except DecryptionError as exc:
                raise CorruptData(
                    f"resource {self.info.folder}/{self.info.name}: the upstream's data"
                    " failed authentication"
                ) from exc

    def _check_corrupt(self) -> None:
        if self._corrupt:
            raise CorruptData(
                f"resource {self.info.folder}/{self.info.name}: the upstream's data"
                " failed authentication"
            )

    def corrupt(self) -> None:
        """A follower found bytes that fail authentication: stop, keep nothing."""
        with self._cond:
            if self.state is State.DONE:
                return
            self._corrupt = True
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._cond.notify_all()

    def _set(self, state: State) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _fail(self, exc: CofferError) -> None:
        # The file goes before followers hear of the failure, so a load that
        # fails with it leaves nothing behind when it returns.
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        with self._cond:
            self.error = exc
            self.state = State.FAILED
            self._cond.notify_all()

    # -- followers -----------------------------------------------------------

    def follow(self) -> Follower:
        """A reader of this download from its first byte; only while the flight is registered."""
        with self._cond:
            self._followers += 1
            return Follower(self, os.dup(self._read_fd))

    def _leave(self, verified: bool) -> None:
        with self._cond:
            self._followers -= 1
            self._verified = self._verified or verified
            self._cond.notify_all()

    def wait(self, timeout: float) -> State:
        """Wait until the flight ended (or ``timeout``); its state then."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.state in (State.DONE, State.FAILED, State.UNCACHEABLE), timeout
            )
            return self.state


class Follower:
    """``readinto`` over a flight's growing file; falls back to the CDN when uncacheable."""

    from_cache = False

    def __init__(self, flight: Flight, fd: int) -> None:
        self._flight = flight
        self._fd = fd
        self.pos = 0
        self._direct: Iterator[bytes] | None = None
        self._read_rest: Reader | None = None  # over _direct
        self._ok = False
        self.streamed = False  # whether it had to fetch from the CDN itself

    def readinto(self, buffer: memoryview) -> int:
        if self._direct is not None:
            return self._read_direct(buffer)
        flight = self._flight
        size = flight.info.big_size
        with flight._cond:
            while self.pos >= flight.written:
                if self.pos >= size:
                    return 0
                if flight.state is State.FAILED:
                    assert flight.error is not None
                    raise flight.error
                if flight.state is State.UNCACHEABLE:
                    break
                flight._cond.wait(POLL)
            avail = flight.written - self.pos
        if avail <= 0:  # uncacheable, and every byte on disk read: the rest from the CDN
            self.streamed = True
            info = flight.info
            direct = flight._client.iter_big(info.big_url, size, self.pos)
            if flight.segments is not None:  # from a chunk boundary: what the flight wrote
                direct = verified(direct, flight.manifest, flight.segments, self.pos)
            self._direct = iter(direct)
            self._read_rest = chunk_reader(self._direct)
            return self._read_direct(buffer)
        n = os.preadv(self._fd, [buffer[: min(len(buffer), avail)]], self.pos)
        self.pos += n
        return n

    def _read_direct(self, buffer: memoryview) -> int:
        assert self._read_rest is not None
        n = len(self._read_rest(buffer))
        self.pos += n
        return n

    def authenticated(self) -> None:
        """Every byte was read and decrypted with authentication: the flight may commit."""
        self._ok = not self.streamed

    @property
    def verified(self) -> bool:
        """Whether this follower authenticated every byte of the download."""
        return self._ok

    def wait_landed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the download is in place or ended otherwise."""
        self._flight.wait(timeout)

    def failed_authentication(self) -> None:
        """Some byte read failed authentication: the download is worthless."""
        if not self.streamed:
            self._flight.corrupt()

    def close(self) -> None:
        close = getattr(self._direct, "close", None)
        if close is not None:
            close()
        os.close(self._fd)
        self._flight._leave(self._ok)
