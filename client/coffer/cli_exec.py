"""``coffer exec``: run a command with resources in sealed memfds, named by paths.

::

    coffer exec --load model.bin=MODEL -- llama-cli -m '$MODEL'   (in a shell: "$MODEL")

Each ``--load NAME=VAR`` is loaded into a sealed memfd (``load_memfd``: made
and allocated here, so its pages count against this command's memory cgroup,
the child's, never cofferd's), its fd made inheritable and ``VAR`` set to
``/proc/self/fd/N``, which in the child names the same memfd: a path it can
open, seek and mmap, backed by memory only. The command runs as a child (not
exec'd: this process stays to pass signals on), and ``coffer exec`` exits
with its status, or 128 + the signal that killed it.

Signals: SIGINT, SIGTERM and SIGHUP sent to ``coffer exec`` by a process
(``kill``, systemd) are passed on to the child. The same signals from the
terminal (Ctrl-C, a hang-up) reach the whole foreground process group, the
child included, so they are not sent a second time.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from coffer.client import DEFAULT_FOLDER, Client
from coffer.memfd import Memfd

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# si_code of a signal the kernel generated (a terminal's Ctrl-C or hang-up);
# the signal module does not name it.
_SI_KERNEL = 0x80
#: What a shell answers when a command cannot be run / is not found.
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127


_DESCRIPTION = """\
Run COMMAND with resources in sealed memfds: each --load NAME=VAR loads NAME
into memory only (never a file), and sets VAR to /proc/self/fd/N, a path the
command can open, seek and mmap. Example:

  coffer exec --load model.bin=MODEL -- sh -c 'sha256sum "$MODEL"'

coffer exec exits with COMMAND's status (128 + the signal that killed it, 127
if it cannot be found) and passes on SIGINT, SIGTERM and SIGHUP sent to it."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``exec`` to the ``coffer`` subcommands."""
    help = "run a command with resources in sealed memfds (never on disk)"
    p = sub.add_parser(
        "exec",
        parents=[common],
        help=help,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=cmd_exec)
    p.add_argument(
        "--load",
        action="append",
        required=True,
        type=_load_spec,
        metavar="NAME=VAR",
        help="load resource NAME into a memfd and set VAR to its path (repeatable)",
    )
    p.add_argument("--folder", default=DEFAULT_FOLDER, help="default: %(default)s")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")


def _load_spec(text: str) -> tuple[str, str]:
    name, sep, var = text.rpartition("=")
    if not sep or not name or not _VAR.match(var):
        raise argparse.ArgumentTypeError(
            f"not NAME=VAR with VAR an environment variable name: {text!r}"
        )
    return name, var


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("coffer: exec needs a command after --", file=sys.stderr)
        return 2
    env = dict(os.environ)
    memfds: list[Memfd] = []
    try:
        with Client(args.socket, timeout=args.timeout) as client:
            for name, var in args.load:
                memfd = client.load_memfd(name, args.folder)
                memfds.append(memfd)
                env[var] = memfd.path
        return run(command, env, [m.fd for m in memfds])
    finally:
        # The child holds its own copies: the memory goes when it exits.
        for memfd in memfds:
            memfd.close()


def run(command: Sequence[str], env: dict[str, str], fds: Sequence[int]) -> int:
    """Run ``command`` with ``fds`` inherited at the same numbers; its exit status."""
    for fd in fds:
        os.set_inheritable(fd, True)
    waited = {*_FORWARDED, signal.SIGCHLD}
    # Blocked before the child exists, so none is lost in between; the child
    # starts with them unblocked again.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        try:
            child = subprocess.Popen(
                list(command),
                env=env,
                pass_fds=tuple(fds),
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
            )
        except FileNotFoundError:
            print(f"coffer: {command[0]}: command not found", file=sys.stderr)
            return EXIT_NOT_FOUND
        except PermissionError:
            print(f"coffer: {command[0]}: permission denied", file=sys.stderr)
            return EXIT_CANNOT_RUN
        while (status := child.poll()) is None:
            info = signal.sigwaitinfo(waited)
            if info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
                child.send_signal(info.si_signo)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return 128 - status if status < 0 else status
