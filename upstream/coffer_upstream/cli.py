"""``coffer-upstream``: run the reference upstream, manage its users.

::

    coffer-upstream serve --host 127.0.0.1 --port PORT --data-dir DIR
                          [--public-url URL] [--token-ttl S] [--upload-ttl S] [--url-ttl S]
                          [--idle-timeout S] [--lease-seconds S]
    coffer-upstream user add EMAIL --role reader|publisher --data-dir DIR  < password
    coffer-upstream lease-key --data-dir DIR [--json]

``serve`` prints ``listening on URL`` as its first stdout line once it accepts
connections (with ``--port 0`` the URL names the port picked), then logs one
line per request to stderr. SIGTERM or SIGINT stops it cleanly (exit 0).

``lease-key`` prints the public key that signs leases (standard base64 of the
raw 32 bytes; with ``--json``, ``{"key_id": ..., "public_key": ...}``), making
the key first if the data dir has none yet: what a device pins.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from coffer_upstream.config import ServerConfig
from coffer_upstream.datadir import DataDir
from coffer_upstream.leases import LeaseKey
from coffer_upstream.passwords import hash_password
from coffer_upstream.server import make_server
from coffer_upstream.store import Store, UserExists

ROLES = ("reader", "publisher")
_MAX_EMAIL = 254


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "lease-key":
            return _lease_key(args)
        return _user_add(args)
    except (OSError, ValueError, sqlite3.Error) as exc:
        print(f"coffer-upstream: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coffer-upstream", description="The reference upstream of coffer (protocol v1)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the resource API and the CDN")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8080, help="0 picks a free port")
    serve.add_argument("--data-dir", type=Path, required=True)
    serve.add_argument("--public-url", help="base of the CDN URLs (default http://HOST:PORT)")
    serve.add_argument("--token-ttl", type=int, default=900, metavar="S")
    serve.add_argument("--upload-ttl", type=int, default=3600, metavar="S")
    serve.add_argument("--url-ttl", type=int, default=3600, metavar="S")
    serve.add_argument("--idle-timeout", type=float, default=120.0, metavar="S")
    serve.add_argument(
        "--lease-seconds",
        type=int,
        default=7 * 24 * 3600,
        metavar="S",
        help="how long a device may use a resource offline (default 7 days)",
    )
    serve.add_argument("--log-level", default="INFO")

    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add a user; the password is read from stdin")
    add.add_argument("email")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--data-dir", type=Path, required=True)

    lease_key = commands.add_parser(
        "lease-key", help="print the public key that signs leases (made if absent)"
    )
    lease_key.add_argument("--data-dir", type=Path, required=True)
    lease_key.add_argument("--json", action="store_true", help="print key_id and public_key")
    return parser


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = ServerConfig(
        data_dir=args.data_dir,
        public_url=args.public_url,
        token_ttl=args.token_ttl,
        upload_ttl=args.upload_ttl,
        url_ttl=args.url_ttl,
        idle_timeout=args.idle_timeout,
        lease_seconds=args.lease_seconds,
    )
    server = make_server(config, args.host, args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return: it cannot run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    logging.getLogger("coffer_upstream").info("stopped")
    return 0


def _lease_key(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir)
    data.ensure()
    key = LeaseKey.load_or_create(data.lease_key_path)
    if args.json:
        print(json.dumps({"key_id": key.key_id, "public_key": key.public_key}))
    else:
        print(key.public_key)
    return 0


def _user_add(args: argparse.Namespace) -> int:
    email: str = args.email
    if (
        not 0 < len(email) <= _MAX_EMAIL
        or "@" not in email
        or not email.isprintable()
        or (any(c.isspace() for c in email))
    ):
        print("coffer-upstream: not a usable email address", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("coffer-upstream: refusing an empty password", file=sys.stderr)
        return 2
    data = DataDir(args.data_dir)
    data.ensure()
    store = Store(data.db_path)
    try:
        store.add_user(email, args.role, hash_password(password))
    except UserExists:
        print(f"coffer-upstream: user {email} already exists", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"added {args.role} {email}")
    return 0
