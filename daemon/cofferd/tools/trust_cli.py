"""``coffer trust ...``: pin the root on a device, and the fleet owner's offline tools.

A plugin of the ``coffer`` CLI (``coffer.commands``), shipped with cofferd
because it needs python-tuf. See docs/operations.md, "Trust: the fleet
owner's keys".

- ``trust init ROOT.json [--replace]``, ``trust status``: through cofferd
  (``trust.init``, ``trust.status``).
- ``trust new``, ``trust rotate``, ``trust publishers``: offline, with the
  owner's keys (:mod:`cofferd.trust.owner`); each writes new files into
  ``--out DIR`` (never over an existing one; all of a command's files or none).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata

from coffer.cli import CommandError, ExitCode, days
from coffer.client import Client
from cofferd.trust import keys, owner
from cofferd.trust.keys import KeyFileError
from cofferd.trust.owner import MetadataError

#: Longest metadata file a command reads.
MAX_METADATA_FILE = 16 << 20


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``trust init|status|new|rotate|publishers`` to the ``coffer`` CLI."""
    parser = subparsers.add_parser("trust", help="the root of trust: pin it, make it, rotate it")
    sub = parser.add_subparsers(dest="trust_command", required=True, metavar="ACTION")

    p = sub.add_parser(
        "init",
        help="pin ROOT.json as this device's root of trust (an operator's command)",
        description="Pin ROOT.json (from the fleet's owner) as the root of trust cofferd "
        "verifies every release against. Another root is refused unless --replace is given.",
    )
    p.add_argument("root", metavar="ROOT.json")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace another pinned root (erases the trust metadata and the versions seen)",
    )
    p.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("status", help="the trust mode, the pinned root, the last refresh")
    p.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_status)

    expires = "days until the metadata expires (default 365)"
    p = sub.add_parser(
        "new",
        help="make the first root and targets (the fleet's owner, offline)",
        description="Make 1.root.json and 1.targets.json in --out: the root keys (a threshold "
        "of them signs), the targets keys (the root keys unless given), the upstream's online "
        "key for snapshot and timestamp, and the publishers' keys.",
    )
    p.add_argument("--root-key", action="append", required=True, metavar="K.key")
    p.add_argument(
        "--threshold",
        type=_count,
        help="root keys needed to sign (default: a majority of those given)",
    )
    p.add_argument("--targets-key", action="append", default=[], metavar="K.key")
    p.add_argument("--online-key", required=True, metavar="ONLINE.pub")
    p.add_argument("--publisher-key", action="append", required=True, metavar="P.pub")
    p.add_argument("--expires", type=days, metavar="DAYS", help=expires)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_new)

    p = sub.add_parser(
        "rotate",
        help="make the next root with new root keys (signed by the old and the new)",
        description="Make root N+1 in --out: its root keys are the --new-key ones; it is "
        "signed by the --old-key ones (a threshold of root N's) and the new ones, so that "
        "devices pinned at N follow it.",
    )
    p.add_argument("--root", required=True, metavar="N.root.json")
    p.add_argument("--old-key", action="append", required=True, metavar="K.key")
    p.add_argument("--new-key", action="append", required=True, metavar="K.key")
    p.add_argument("--threshold", type=_count, help="new root keys needed (default: a majority)")
    p.add_argument("--online-key", metavar="ONLINE.pub", help="also a new online key")
    p.add_argument("--expires", type=days, metavar="DAYS", help=expires)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_rotate)

    p = sub.add_parser(
        "publishers",
        help="make the next targets: exactly these publishers' keys (others are revoked)",
        description="Make the next targets.json in --out, delegating the publishers role to "
        "exactly the --publisher-key keys: a key left out is revoked.",
    )
    p.add_argument("--targets", required=True, metavar="N.targets.json")
    p.add_argument("--targets-key", action="append", required=True, metavar="K.key")
    p.add_argument("--publisher-key", action="append", required=True, metavar="P.pub")
    p.add_argument("--root", metavar="ROOT.json", help="check the result against this root")
    p.add_argument("--expires", type=days, metavar="DAYS", help=expires)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_publishers)


# -- through cofferd ----------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    with open(path, "rb") as src:
        data = src.read(MAX_METADATA_FILE + 1)
    if len(data) > MAX_METADATA_FILE:
        raise CommandError(f"{path} is too large to be {what}", ExitCode.BAD_REQUEST)
    return data


def cmd_init(args: argparse.Namespace) -> int:
    data = _read(args.root, "a root.json")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(
            f"{args.root} is not a root.json (not UTF-8)", ExitCode.BAD_REQUEST
        ) from None
    with Client(args.socket, timeout=args.timeout) as c:
        r = c.trust_init(text, replace=args.replace)
    verb = "replaced the pinned root with" if r.get("replaced") else "pinned"
    # key_ids: every key the root lists (root, targets, snapshot, timestamp).
    _emit(args, r, f"{verb} root version {r.get('version')} ({len(r.get('key_ids') or [])} keys)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Client(args.socket, timeout=args.timeout) as c:
        r = c.trust_status()
    root = r.get("root")
    lines = [
        f"trust:        {r.get('mode')}",
        "pinned root:  " + (f"version {root.get('version')}" if isinstance(root, dict) else "none"),
    ]
    last = r.get("last_refresh")
    if isinstance(last, dict):
        state = "ok" if last.get("ok") else f"failed ({last.get('rule')}): {last.get('detail')}"
        at = last.get("at")
        when = (
            time.strftime(" at %Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
            if isinstance(at, int | float)
            else ""
        )
        lines.append(f"last refresh: {state}{when}")
    roles = r.get("roles")
    if isinstance(roles, dict):
        for name, info in roles.items():
            if isinstance(info, dict):
                lines.append(
                    f"{name + ':':<13} version {info.get('version')}, expires {info.get('expires')}"
                )
    _emit(args, r, "\n".join(lines))
    return 0


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(json.dumps(result, sort_keys=True) if args.json else text)


# -- offline: the owner's tools ------------------------------------------------


def _signers(paths: list[str]) -> list[Signer]:
    try:
        return [keys.load_signer(p) for p in paths]
    except KeyFileError as exc:
        raise CommandError(str(exc)) from exc


def _publics(paths: list[str]) -> list[Key]:
    try:
        return [keys.load_public(p) for p in paths]
    except KeyFileError as exc:
        raise CommandError(str(exc)) from exc


def _majority(count: int) -> int:
    return math.floor(count / 2) + 1


def _out_dir(path: str) -> Path:
    out = Path(path)
    if not out.is_dir():
        raise CommandError(f"no directory {out} to write into", ExitCode.USAGE)
    return out


def _write(out: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """Write every file new into ``out``, or none: existing names are refused first."""
    for name, _ in files:
        if os.path.lexists(out / name):
            raise CommandError(f"{out / name} already exists: not overwriting it")
    written: list[Path] = []
    try:
        for name, data in files:
            keys.write_new(out / name, data, 0o644)
            written.append(out / name)
    except BaseException:
        for path in written:
            path.unlink()
        raise
    return [str(p) for p in written]


def _metadata_error(exc: MetadataError) -> CommandError:
    return CommandError(str(exc), ExitCode.BAD_REQUEST)


def cmd_new(args: argparse.Namespace) -> int:
    out = _out_dir(args.out)
    roots = _signers(args.root_key)
    targets = _signers(args.targets_key) or None
    online = _publics([args.online_key])[0]
    publishers = _publics(args.publisher_key)
    try:
        root, targets_md = owner.new_repository(
            roots,
            args.threshold or _majority(len(roots)),
            online,
            publishers,
            targets_signers=targets,
            expires=owner.default_expiry(args.expires),
        )
    except MetadataError as exc:
        raise _metadata_error(exc) from exc
    written = _write(out, [("1.root.json", root), ("1.targets.json", targets_md)])
    _emit(args, {"written": written}, "wrote " + " and ".join(written))
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    out = _out_dir(args.out)
    current = _read(args.root, "a root.json")
    old, new = _signers(args.old_key), _signers(args.new_key)
    online = _publics([args.online_key])[0] if args.online_key else None
    try:
        root = owner.rotate_root(
            current,
            old,
            new,
            args.threshold or _majority(len(new)),
            online_key=online,
            expires=owner.default_expiry(args.expires),
        )
    except MetadataError as exc:
        raise _metadata_error(exc) from exc
    version = Metadata.from_bytes(root).signed.version
    written = _write(out, [(f"{version}.root.json", root)])
    _emit(args, {"written": written}, f"wrote {written[0]}")
    return 0


def cmd_publishers(args: argparse.Namespace) -> int:
    out = _out_dir(args.out)
    current = _read(args.targets, "a targets.json")
    root = _read(args.root, "a root.json") if args.root else None
    signers = _signers(args.targets_key)
    publishers = _publics(args.publisher_key)
    try:
        targets = owner.set_publishers(
            current, signers, publishers, root=root, expires=owner.default_expiry(args.expires)
        )
    except MetadataError as exc:
        raise _metadata_error(exc) from exc
    version = Metadata.from_bytes(targets).signed.version
    written = _write(out, [(f"{version}.targets.json", targets)])
    _emit(args, {"written": written}, f"wrote {written[0]}")
    return 0
