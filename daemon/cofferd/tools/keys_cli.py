"""``coffer keys generate NAME``: an Ed25519 signing key pair (docs/trust.md, operations.md).

A plugin of the ``coffer`` CLI (``coffer.commands``), shipped with cofferd
because it needs python-tuf's key format. ``NAME.key`` is the private key
(0600, never overwritten), ``NAME.pub`` the public key to hand to the fleet's
owner (publisher keys) or to put into root (the owner's own keys).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from coffer.cli import CommandError, ExitCode
from cofferd.trust import keys
from cofferd.trust.keys import KeyFileError


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``keys generate`` to the ``coffer`` CLI."""
    parser = subparsers.add_parser("keys", help="signing keys of publishers and the fleet's owner")
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = sub.add_parser(
        "generate",
        help="make NAME.key (private, 0600) and NAME.pub (public)",
        description="Make an Ed25519 key pair: NAME.key, the private key (mode 0600; keep it "
        "offline or as a systemd credential, back it up), and NAME.pub, the public key in "
        "TUF's format. Never overwrites a file.",
    )
    p.add_argument("name", metavar="NAME", help="the path without .key / .pub")
    p.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    if not args.name or args.name.endswith(("/", keys.PRIVATE_SUFFIX, keys.PUBLIC_SUFFIX)):
        raise CommandError(
            f"give the key's name without .key or .pub, not {args.name!r}", ExitCode.USAGE
        )
    try:
        public = keys.generate(args.name)
    except KeyFileError as exc:
        raise CommandError(str(exc)) from exc
    result = {
        "private": args.name + keys.PRIVATE_SUFFIX,
        "public": args.name + keys.PUBLIC_SUFFIX,
        "keyid": public.keyid,
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(
            f"wrote {result['private']} (private: keep it offline and backed up) and "
            f"{result['public']} (public); keyid {public.keyid}"
        )
    return 0
