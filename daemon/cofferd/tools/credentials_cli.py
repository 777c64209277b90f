"""``coffer credentials set-login|remove-login``: the boot login, set up by an operator as root.

``set-login --email E`` reads the password (stdin, or a no-echo prompt on a
terminal), encrypts ``{"email": E, "password": P}`` with ``systemd-creds
encrypt --name=coffer-login`` (systemd's default key choice, ``auto``: the
host key, and the TPM2 too where there is one), writes the result to
``/etc/coffer/login.cred`` (mode 0600), installs the drop-in
``/etc/systemd/system/cofferd.service.d/login.conf`` naming it with
``LoadCredentialEncrypted=``, then ``systemctl daemon-reload`` and ``systemctl
try-restart cofferd``. The drop-in is made with the file because systemd 252
refuses to start a unit whose credential file is missing.

The plaintext goes to ``systemd-creds`` on its stdin, never in argv (which
any local user can read in ``/proc``) and never in a file. ``remove-login``
removes both files, reloads and restarts. Paths are options so tests can run
this outside ``/etc``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from coffer.cli import CommandError, ExitCode, read_password

CREDENTIAL_NAME = "coffer-login"
DEFAULT_CRED = Path("/etc/coffer/login.cred")
DEFAULT_DROPIN = Path("/etc/systemd/system/cofferd.service.d/login.conf")
UNIT = "cofferd.service"
TIMEOUT = 60.0


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``credentials set-login`` and ``credentials remove-login`` to ``coffer``."""
    parser = subparsers.add_parser(
        "credentials", help="the upstream login cofferd uses at boot (as root)"
    )
    sub = parser.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    p = sub.add_parser(
        "set-login",
        help="store an upstream login for cofferd, encrypted by systemd-creds, and restart it",
        description="Encrypt the login with systemd-creds (host key, and the TPM2 where "
        "present), name it in a drop-in of cofferd.service, reload and restart cofferd.",
    )
    p.add_argument("--email", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _paths(p)
    p.set_defaults(handler=set_login)
    p = sub.add_parser(
        "remove-login", help="remove the stored login and its drop-in, and restart cofferd"
    )
    _paths(p)
    p.set_defaults(handler=remove_login)


def _paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cred-file", type=Path, default=DEFAULT_CRED, help="default: %(default)s")
    p.add_argument("--dropin", type=Path, default=DEFAULT_DROPIN, help="default: %(default)s")
    p.add_argument(
        "--no-restart", action="store_true", help="skip systemctl daemon-reload and try-restart"
    )


def _run(argv: list[str], stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise CommandError(f"{argv[0]} is not installed", ExitCode.OTHER) from None
    except subprocess.TimeoutExpired:
        raise CommandError(
            f"{argv[0]} did not finish within {TIMEOUT:g} s", ExitCode.OTHER
        ) from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-300:]
        raise CommandError(f"{' '.join(argv[:2])} failed: {err}", ExitCode.OTHER)
    return done.stdout


def _reload(args: argparse.Namespace) -> None:
    if not args.no_restart:
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "try-restart", UNIT])


def set_login(args: argparse.Namespace) -> int:
    password = read_password(args)
    secret = json.dumps({"email": args.email, "password": password}).encode()
    sealed = _run(["systemd-creds", "encrypt", f"--name={CREDENTIAL_NAME}", "-", "-"], stdin=secret)
    args.cred_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = args.cred_file.with_name(args.cred_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(sealed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, args.cred_file)
    args.dropin.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    args.dropin.write_text(
        "# Written by `coffer credentials set-login`; removed by `remove-login`.\n"
        f"[Service]\nLoadCredentialEncrypted={CREDENTIAL_NAME}:{args.cred_file}\n"
    )
    _reload(args)
    print(f"stored the login of {args.email} in {args.cred_file}; cofferd restarted")
    return 0


def remove_login(args: argparse.Namespace) -> int:
    removed = []
    for path in (args.dropin, args.cred_file):
        try:
            path.unlink()
            removed.append(str(path))
        except FileNotFoundError:
            pass
    _reload(args)
    print(f"removed {', '.join(removed) or 'nothing (no login was stored)'}")
    return 0
