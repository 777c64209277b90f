"""Where cofferd listens, and who may call it.

Either its own socket (:func:`bind_unix`: mode 0660 from birth, a stale file
replaced, a live one refused) or the one systemd passes (:func:`systemd_socket`,
socket activation). :class:`PeerPolicy` then checks each connecting process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cofferd.errors import ListenError
from cofferd.rpc.dispatch.context import PeerCred

SOCKET_MODE = 0o660


def bind_unix(path: Path, backlog: int = 128) -> socket.socket:
    """Bind and listen on ``path`` with mode 0660, replacing a stale socket file.

    A socket another process still serves is refused, and so is any other kind
    of file: cofferd removes only what it can tell is a dead socket.
    """
    if not path.parent.is_dir():
        raise ListenError(f"the socket's directory {path.parent} does not exist")
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenError(f"{path} exists and is not a socket; remove it or pick another path")
        if _is_live(path):
            raise ListenError(f"another process already serves {path}; stop it first")
        path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the file 0660 from birth, so no one can connect in between.
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    return sock


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        raise ListenError(f"cannot tell whether {path} is in use: {exc.strerror}") from exc
    else:
        return True
    finally:
        probe.close()


def systemd_socket(environ: Mapping[str, str], pid: int) -> socket.socket | None:
    """The listening socket systemd passed (``LISTEN_FDS``, fd 3), or None.

    Checked to be a listening Unix stream socket, since serving anything else
    would fail in confusing ways later.
    """
    if environ.get("LISTEN_PID") != str(pid) or not environ.get("LISTEN_FDS"):
        return None
    if environ["LISTEN_FDS"] != "1":
        raise ListenError(f"systemd passed {environ['LISTEN_FDS']} sockets; cofferd takes one")
    try:
        sock = socket.socket(fileno=3)
    except OSError as exc:
        raise ListenError(f"the fd systemd passed is not a socket: {exc.strerror}") from exc
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ListenError("the socket systemd passed is not a listening Unix stream socket")
    sock.set_inheritable(False)
    return sock


@dataclass(frozen=True)
class PeerPolicy:
    """Who may call, checked again per connection on top of the socket file's mode.

    The socket's owner and group may open it (0660); the kernel checks that at
    connect. The check here holds even when the file's mode was loosened, or
    a connected socket was handed to another process: root, cofferd's own
    user, and members of the socket file's group, nobody else.
    """

    uids: frozenset[int]
    gid: int | None

    @classmethod
    def for_socket(cls, listener: socket.socket) -> PeerPolicy:
        gid: int | None = None
        name = listener.getsockname()
        if isinstance(name, str) and name:
            with contextlib.suppress(OSError):  # unknown group: the file mode still rules
                gid = os.stat(name).st_gid
        return cls(uids=frozenset({0, os.geteuid()}), gid=gid)

    def allows(self, peer: PeerCred) -> bool:
        if peer.uid in self.uids or self.gid is None:
            return True
        return peer.gid == self.gid or self.gid in peer.groups
