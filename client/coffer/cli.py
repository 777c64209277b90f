"""``coffer``: the command-line client of cofferd.

Thin on purpose: parse the command line, call :mod:`coffer.client`, print the
result, and turn an error into one line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO, cast

from coffer import __version__, cli_cache, cli_exec, cli_field, cli_rpc
from coffer.atomic import atomic_file
from coffer.client import DEFAULT_FOLDER, DEFAULT_TIMEOUT, Client, Progress
from coffer.errors import (
    CofferRPCError,
    DaemonUnavailable,
)
from coffer.progress import ProgressLine, progress_on_terminal
from coffer.progress import mib as _mib
from coffer.protocol import ErrorCode


class ExitCode(enum.IntEnum):
    OK = 0
    OTHER = 1
    USAGE = 2
    DAEMON_UNAVAILABLE = 3
    UNAUTHORIZED = 4
    NOT_FOUND = 5
    CONFLICT = 6
    BAD_REQUEST = 7
    UPSTREAM = 8
    SHUTTING_DOWN = 9
    OFFLINE_REFUSED = 10
    UNTRUSTED = 11
    INTERRUPTED = 130


EPILOG = """\
exit codes:
  0  success
  1  any other error (a local file, the daemon failed, a protocol error)
  2  usage: bad arguments, no password given
  3  daemon unavailable: no socket, connection refused, permission denied, timed out,
     or busy (429: it serves too many connections; try again)
  4  unauthorized: not logged in, the upstream refused the credentials,
     or this user may not call login (403)
  5  not found: no such resource or archive
  6  conflict: clashes with work under way (an unlock already runs)
  7  bad request: a bad name or parameter, or over a size limit
  8  upstream unavailable, or it served corrupt or tampered data
  9  the daemon is shutting down
  10 offline use refused: upstream unreachable and no valid lease, clock or cache for it
  11 untrusted: not what a publisher signed, or no root of trust pinned (422)
  1  also: cofferd's state dir cannot be written (507; status says so)
  130 interrupted (Ctrl-C)

The socket is --socket, else $COFFER_SOCKET, else /run/coffer/cofferd.sock.
"""

#: Every wire code → the exit status it ends ``coffer`` with: one mapping,
#: complete over :class:`ErrorCode` (a test checks), used by every subcommand.
EXIT_CODES: dict[ErrorCode, ExitCode] = {
    ErrorCode.PARSE_ERROR: ExitCode.OTHER,
    ErrorCode.INVALID_REQUEST: ExitCode.OTHER,
    ErrorCode.METHOD_NOT_FOUND: ExitCode.OTHER,
    ErrorCode.INVALID_PARAMS: ExitCode.BAD_REQUEST,
    ErrorCode.INTERNAL_ERROR: ExitCode.OTHER,
    ErrorCode.BAD_REQUEST: ExitCode.BAD_REQUEST,
    ErrorCode.UNAUTHORIZED: ExitCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: ExitCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND: ExitCode.NOT_FOUND,
    ErrorCode.CONFLICT: ExitCode.CONFLICT,
    ErrorCode.OFFLINE_REFUSED: ExitCode.OFFLINE_REFUSED,
    ErrorCode.UNTRUSTED: ExitCode.UNTRUSTED,
    ErrorCode.TOO_LARGE: ExitCode.BAD_REQUEST,
    ErrorCode.BUSY: ExitCode.DAEMON_UNAVAILABLE,
    ErrorCode.UPSTREAM_BAD_DATA: ExitCode.UPSTREAM,
    ErrorCode.UPSTREAM_UNAVAILABLE: ExitCode.UPSTREAM,
    ErrorCode.SHUTTING_DOWN: ExitCode.SHUTTING_DOWN,
    ErrorCode.STATE_UNWRITABLE: ExitCode.OTHER,
}


#: A subcommand: takes the parsed arguments, returns the exit status.
Handler = Callable[[argparse.Namespace], int]

#: Entry points in this group add subcommands: each names a function that takes
#: the subparsers action and adds its parser (setting ``handler``). cofferd's
#: distribution registers ``archive`` here; without it the command is absent.
PLUGIN_GROUP = "coffer.commands"
#: The entry point that signs a release for ``upload --sign-key`` (cofferd's:
#: ``cofferd.tools.release_signer``); this package never imports TUF itself.
SIGNER_GROUP = "coffer.release_signers"
#: Global options that take a value, to find the command in argv without parsing it.
_OPTIONS_WITH_VALUE = frozenset({"--socket", "--timeout"})


class CommandError(Exception):
    """A failure to report as ``coffer: <detail>`` with ``exit_code``."""

    def __init__(self, detail: str, exit_code: ExitCode = ExitCode.OTHER) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exit_code = exit_code


def exit_code_for(exc: CofferRPCError) -> ExitCode:
    """The exit status for ``exc``: by its wire code; no daemon at all is 3."""
    if exc.code is None:
        return ExitCode.DAEMON_UNAVAILABLE if isinstance(exc, DaemonUnavailable) else ExitCode.OTHER
    try:
        return EXIT_CODES[ErrorCode(exc.code)]
    except ValueError:  # a code this client does not know
        return ExitCode.OTHER


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``coffer`` parser; given ``argv`` naming a built-in command, without the plugins.

    A plugin may import heavy modules (cofferd's crypto), so ``coffer health``
    does not pay for ``coffer archive``.
    """
    parser = argparse.ArgumentParser(
        prog="coffer",
        description="Talk to the cofferd daemon: log in, load and upload protected files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"coffer {__version__}")
    parser.add_argument("--socket", metavar="PATH", help="cofferd's socket")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long without progress (default {DEFAULT_TIMEOUT:g})",
    )
    # --socket and --json read as well after the command; SUPPRESS keeps a
    # subcommand from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    command("health", cmd_health, "is the daemon serving?")
    command("status", cmd_status, "login state, model cache dir, upstream")
    _add_credentials(command("login", cmd_login, "give cofferd your upstream credentials"))
    p = command("enroll", cmd_enroll, "enroll this device with an enrollment token")
    p.add_argument(
        "--token-stdin",
        action="store_true",
        help="read the token as one line of standard input (the default when it is no terminal)",
    )
    cli_field.add_commands(command, cmd_logout)

    p = command("load", cmd_load, "fetch and decrypt a resource")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--folder", default=DEFAULT_FOLDER, help="default: %(default)s")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write (replaced only on success), or - for standard output",
    )

    p = command("upload", cmd_upload, "encrypt and publish a file, and sign its release")
    p.add_argument("file", metavar="FILE", help="the file, or - for standard input")
    p.add_argument("--name", help="resource name (default: FILE's base name)")
    p.add_argument("--folder", default=DEFAULT_FOLDER, help="default: %(default)s")
    add_signing_options(p)

    p = command("unlock", cmd_unlock, "decrypt the device's Docker images into the engine")
    _add_credentials(p)
    p.add_argument("--wait", action="store_true", help="wait until it is ready or failed")

    command("unlock-status", cmd_unlock_status, "progress of the unlock")
    cli_exec.register(sub, common)
    cli_cache.add_commands(command)
    cli_rpc.add_parser(command, exit_code_for)

    # Plugins are skipped only when a built-in command is chosen; otherwise they
    # are loaded, so that help and "invalid choice" list them.
    if argv is None or _command_in(argv) not in sub.choices:
        for plugin in entry_points(group=PLUGIN_GROUP):
            if plugin.name not in sub.choices:
                plugin.load()(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The first word of ``argv`` that is not a global option or its value."""
    words = iter(argv)
    for word in words:
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _add_credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--email", required=True)
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line of standard input (the default when it is no terminal)",
    )


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code = int(args.handler(args))
    except CommandError as exc:
        return _fail(exc.detail, exc.exit_code)
    except CofferRPCError as exc:
        return _fail(exc.detail, exit_code_for(exc))
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`); quiet the final flush too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("output closed before the end", ExitCode.OTHER)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", ExitCode.OTHER)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    return code


def _fail(detail: str, code: ExitCode) -> int:
    print(f"coffer: {detail}", file=sys.stderr)
    return int(code)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.socket, timeout=args.timeout)


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str, to: TextIO) -> None:
    print(json.dumps(result, sort_keys=True) if args.json else text, file=to)


def cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.health()
    _emit(args, r, f"{r.get('status')} (cofferd {r.get('version')})", sys.stdout)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.status()
    unlock = r.get("unlock")
    lines = [
        f"authenticated:   {'yes' if r.get('authenticated') else 'no'}",
        f"model cache dir: {r.get('model_cache_dir')}",
        f"upstream:        {r.get('upstream_url')}",
        f"version:         {r.get('version')}",
        f"unlock:          {unlock.get('state') if isinstance(unlock, dict) else unlock}",
        *cli_field.field_lines(r),
        *cli_field.identity_lines(r),
    ]
    cache = r.get("cache")
    if isinstance(cache, dict):
        lines.append(
            f"cache:           {_mib(cache.get('bytes', 0))} in {cache.get('entries')} entries"
        )
        last = cache.get("last_uncached")
        if isinstance(last, dict):
            lines.append(
                f"last uncached:   {last.get('folder')}/{last.get('name')}: {last.get('reason')}"
            )
        if cache.get("state_writable") is False:
            lines.append(
                f"state dir:       NOT writable ({cache.get('state_error')}): loads serve;"
                " pins, evictions and logout are refused"
            )
    _emit(args, r, "\n".join(lines), sys.stdout)
    return 0


def read_password(args: argparse.Namespace) -> str:
    """One line of stdin when asked or when stdin is no terminal; else a no-echo prompt."""
    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"Password for {args.email}: ")
        except EOFError:
            password = ""
    if not password:
        raise CommandError("no password given", ExitCode.USAGE)
    return password


def cmd_login(args: argparse.Namespace) -> int:
    password = read_password(args)
    with _client(args) as c:
        r = c.login(args.email, password)
    _emit(args, r, f"logged in as {args.email}", sys.stdout)
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    # Never an argument: a token on the command line is in every `ps` and the shell's history.
    if args.token_stdin or not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    else:
        try:
            token = getpass.getpass("Enrollment token: ").strip()
        except EOFError:
            token = ""
    if not token:
        raise CommandError("no enrollment token given", ExitCode.USAGE)
    with _client(args) as c:
        r = c.enroll(token)
    _emit(args, r, f"enrolled as device {r.get('device_id')} ({r.get('role')})", sys.stdout)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.logout()
    _emit(args, r, cli_field.print_logout(r), sys.stdout)
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    password = read_password(args)
    with _client(args) as c:
        r = c.unlock(args.email, password)
        while args.wait and r.get("state") not in ("ready", "error", "idle"):
            time.sleep(0.5)
            r = c.unlock_status()
    _emit(args, r, _unlock_text(r), sys.stdout)
    if r.get("state") == "error":
        raise CommandError(f"unlock failed: {r.get('error')}")
    return 0


def cmd_unlock_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.unlock_status()
    _emit(args, r, _unlock_text(r), sys.stdout)
    return 0


def _unlock_text(r: dict[str, Any]) -> str:
    text = f"unlock: {r.get('state')}"
    if r.get("bytes_total"):
        text += f" ({_mib(r.get('bytes_done') or 0)} of {_mib(r['bytes_total'])})"
    if r.get("error"):
        text += f": {r['error']}"
    for image in r.get("images") or ():
        text += f"\n  {image}"
    return text


def cmd_load(args: argparse.Namespace) -> int:
    with _client(args) as c, progress_on_terminal(f"{args.folder}/{args.name}") as progress:
        if args.output == "-":
            if sys.stdout.isatty():
                raise CommandError(
                    "refusing to write binary data to a terminal: redirect it or use -o FILE",
                    ExitCode.USAGE,
                )
            r = c.load(args.name, args.folder, sys.stdout.buffer, progress)
            sys.stdout.buffer.flush()
            _emit(args, r, f"wrote {r.get('size')} bytes ({_what(r)})", sys.stderr)
        else:
            r = _load_to_file(c, args, Path(args.output), progress)
            _emit(args, r, f"wrote {r.get('size')} bytes to {args.output} ({_what(r)})", sys.stdout)
    return 0


def _load_to_file(
    c: Client, args: argparse.Namespace, path: Path, progress: Progress | None
) -> Any:
    """Load into a temp file beside ``path`` and rename it over ``path`` only on success.

    The file is readable by its owner only: it holds a protected file's
    plaintext. A symlink is followed (the link stays); a device or FIFO such
    as /dev/null is written into directly, since nothing may replace it.
    """
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise CommandError(f"{path} is a directory", ExitCode.USAGE)
    if not real.parent.is_dir():
        raise CommandError(f"no directory {real.parent} to write {path.name} in")
    if real.exists() and not real.is_file():
        with real.open("wb") as out:
            return c.load(args.name, args.folder, out, progress)
    with atomic_file(real) as out:
        return c.load(args.name, args.folder, out, progress)


def add_signing_options(p: argparse.ArgumentParser) -> None:
    """``--sign-key``, ``--unsigned`` and ``--expires``: for ``upload`` and ``archive seal``."""
    p.add_argument(
        "--sign-key",
        metavar="PATH",
        help="the publisher's private key (a file, or $CREDENTIALS_DIRECTORY/NAME); "
        "default: $COFFER_SIGN_KEY. It never leaves this process",
    )
    p.add_argument(
        "--unsigned",
        action="store_true",
        help="store it without signing: devices that check releases will not deliver it",
    )
    p.add_argument(
        "--expires",
        type=days,
        metavar="DAYS",
        help="days until the signed publishers metadata expires (default 365)",
    )


def days(text: str) -> int:
    """An argparse type: a number of days from 1 to 36500 (``--expires``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 36500:
        raise argparse.ArgumentTypeError(f"not a number of days from 1 to 36500: {text!r}")
    return value


class ReleaseSigner(Protocol):
    """What the ``coffer.release_signers`` entry point gives: a publisher's key, loaded.

    Its errors are :class:`CommandError` (or :class:`CofferRPCError` from the client).
    """

    def check_resource(self, client: Client, folder: str, name: str) -> None:
        """Refuse now what publishing ``resources/<folder>/<name>`` would refuse."""

    def check_archive(self, client: Client, archive_id: str) -> None:
        """Refuse now what publishing ``archives/<archive_id>`` would refuse."""

    def publish(self, client: Client, target: Mapping[str, Any]) -> dict[str, Any]:
        """Sign ``target`` into the publishers role and publish it: ``{"role", "version"}``."""
        ...


def release_signer(args: argparse.Namespace) -> ReleaseSigner | None:
    """The signer ``--sign-key`` names (loaded now, before any upload), or None if ``--unsigned``.

    It comes from the ``coffer.release_signers`` entry point (cofferd's
    ``cofferd.tools.release_signer``), so this package never imports TUF.
    """
    if args.unsigned:
        if args.sign_key:
            raise CommandError("give --sign-key or --unsigned, not both", ExitCode.USAGE)
        return None
    key = args.sign_key or os.environ.get("COFFER_SIGN_KEY")
    if not key:
        raise CommandError(
            "devices deliver only signed releases: pass --sign-key, "
            "or --unsigned to store it unsigned",
            ExitCode.USAGE,
        )
    for found in entry_points(group=SIGNER_GROUP):
        return cast(ReleaseSigner, found.load()(key, args.expires))
    raise CommandError(
        "signing a release needs cofferd's tools installed (the cofferd package), "
        "or pass --unsigned",
        ExitCode.USAGE,
    )


def cmd_upload(args: argparse.Namespace) -> int:
    if args.file == "-" and not args.name:
        raise CommandError("--name is needed when reading standard input", ExitCode.USAGE)
    signer = release_signer(args)
    if args.file == "-":
        r = _upload(args, args.name, sys.stdin.buffer, signer)
    else:
        with open(args.file, "rb") as src:
            r = _upload(args, args.name or os.path.basename(args.file), src, signer)
    text = f"uploaded {r.get('size')} bytes ({_what(r)})"
    if signer is None:
        text += ", unsigned: devices that check releases will not deliver it"
    else:
        text += f", signed into publishers version {r['signed'].get('version')}"
    _emit(args, r, text, sys.stdout)
    return 0


def _upload(
    args: argparse.Namespace, name: str, src: BinaryIO, signer: ReleaseSigner | None
) -> dict[str, Any]:
    with _client(args) as c:
        if signer is not None:
            # Before a byte goes up: a key the owner did not delegate to, or no
            # pinned root, would leave a version nobody can sign.
            signer.check_resource(c, args.folder, name)
        with progress_on_terminal(f"{args.folder}/{name}") as progress:
            r = c.upload(name, args.folder, src, progress=progress)
        if signer is None:
            return r
        target = r.get("target")
        if not isinstance(target, dict):
            raise CommandError(_unsigned(r, "this cofferd answers no release to sign (update it)"))
        try:
            signed = signer.publish(c, target)
        except CommandError as exc:
            raise CommandError(_unsigned(r, exc.detail), exc.exit_code) from exc
        except CofferRPCError as exc:
            raise CommandError(_unsigned(r, exc.detail), exit_code_for(exc)) from exc
        return {**r, "signed": signed}


def _unsigned(r: dict[str, Any], why: str) -> str:
    return (
        f"{_what(r)} is stored but NOT signed, so devices will not deliver it: {why}; "
        "upload it again to sign a new version"
    )


def _what(r: dict[str, Any]) -> str:
    return f"{r.get('folder')}/{r.get('filename')} version {r.get('version')}"


# What plugins (cofferd.tools.archive_cli) use; ProgressLine lives in coffer.progress.
__all__ = [
    "PLUGIN_GROUP",
    "SIGNER_GROUP",
    "CommandError",
    "ExitCode",
    "Handler",
    "ProgressLine",
    "ReleaseSigner",
    "add_signing_options",
    "build_parser",
    "days",
    "exit_code_for",
    "main",
    "read_password",
    "release_signer",
]


if __name__ == "__main__":
    raise SystemExit(main())
