"""Structured records to systemd-journald over its native protocol, or a line on stderr.

journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL) is one
datagram per entry to ``/run/systemd/journal/socket``: ``KEY=value\\n`` per
field, or ``KEY\\n<le64 length><value>\\n`` when the value holds a newline. An
entry too big for one datagram goes as an empty datagram carrying a sealed
memfd (SCM_RIGHTS) that holds the same bytes, as ``sd_journal_sendv`` does.

Written against the standard library rather than Debian's ``python3-systemd``:
the daemon runs from a private venv at /opt/coffer that does not see
``/usr/lib/python3`` (and mixing the two is what the venv is there to avoid),
PyPI's ``systemd-python`` needs a C compiler and libsystemd headers at build
time, and the protocol is a hundred lines of ``socket`` and ``os.memfd_create``.

An audit record must never hold up a call: the socket is non-blocking, and a
record journald cannot take right now (its queue full: EAGAIN; journald gone:
ENOENT, ECONNREFUSED) is dropped, never retried: ``send`` answers False, and
the caller writes the record's line elsewhere (the call log).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Protocol, TextIO

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

FieldValue = str | int | bytes
Fields = Mapping[str, FieldValue]

# journald's own rule (journal_field_valid): A-Z, 0-9 and _, not starting with a
# digit, at most 64 characters. A leading _ marks the fields journald itself
# vouches for (_PID, _UID...): a client may not send them.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# Errors that mean "journald cannot take this now": drop, count, go on.
_DROP = frozenset({errno.EAGAIN, errno.ENOENT, errno.ECONNREFUSED, errno.ENOBUFS, errno.EPIPE})

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def check_field_name(name: str) -> None:
    """Raise ``ValueError`` unless journald would accept ``name`` from a client."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(
            f"bad journal field name {name!r}: A-Z, 0-9 and _, starting with a letter, at most 64"
        )


def encode(fields: Fields) -> bytes:
    """One entry in the native protocol's wire form."""
    out = bytearray()
    for name, value in fields.items():
        check_field_name(name)
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


class Sink(Protocol):
    def send(self, fields: Fields) -> bool:
        """Hand one entry on; False if it was dropped."""
        ...

    def close(self) -> None: ...


class JournalSender:
    """Sends entries to journald's socket; never blocks, says what it drops."""

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self._path = os.fsencode(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def send(self, fields: Fields) -> bool:
        data = encode(fields)  # a bad field name is the caller's bug: raise it
        try:
            try:
                self._sock.sendto(data, self._path)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                self._send_memfd(data)
        except OSError as exc:
            if exc.errno not in _DROP:
                raise
            return False
        return True

    def _send_memfd(self, data: bytes) -> None:
        # The seals promise journald the content cannot change under it
        # (it refuses an unsealed fd).
        fd = os.memfd_create("cofferd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([], rights, 0, self._path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sock.close()


class StderrSink:
    """Outside journald: the entry's ``MESSAGE`` as one readable line."""

    def __init__(self, stream: TextIO, prefix: str = "cofferd.audit: ") -> None:
        self._stream = stream
        self._prefix = prefix
        self._lock = threading.Lock()

    def send(self, fields: Fields) -> bool:
        for name in fields:
            check_field_name(name)  # the same contract as the journal's
        message = fields.get("MESSAGE", "")
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        line = self._prefix + text.replace("\n", " ") + "\n"
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._stream.write(line)
            self._stream.flush()
        return True

    def close(self) -> None:
        pass


def stderr_is_journal(environ: Mapping[str, str], stderr_fd: int = 2) -> bool:
    """Whether stderr is the stream systemd connected to journald.

    ``JOURNAL_STREAM`` is ``<device>:<inode>`` of that stream; it is inherited
    by children whose stderr went elsewhere, so compare it with stderr itself.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def open_sink(
    environ: MutableMapping[str, str] | Mapping[str, str],
    *,
    path: Path = JOURNAL_SOCKET,
    stderr: TextIO | None = None,
) -> Sink:
    """The journal when running under journald and its socket is there; stderr otherwise."""
    stream = sys.stderr if stderr is None else stderr
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd >= 0 and stderr_is_journal(environ, fd) and path.is_socket():
        return JournalSender(path)
    return StderrSink(stream)
