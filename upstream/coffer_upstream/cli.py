"""``coffer-upstream``: run the reference upstream, administer it.

::

    coffer-upstream serve --host H --port P --data-dir DIR [--database-url URL]
        [--store local] [--workers N] [--forwarded-allow-ips IPS]
        [--public-url URL] [--token-ttl S] [--upload-ttl S] [--url-ttl S]
        [--idle-timeout S] [--lease-seconds S] [--snapshot-expiry S] [--timestamp-expiry S]
    coffer-upstream user add EMAIL --role reader|publisher  < password
    coffer-upstream user ls [--json] | disable EMAIL | enable EMAIL | passwd EMAIL (stdin)
                    | role EMAIL ROLE
    coffer-upstream resource ls [FOLDER] [--json] | rm FOLDER NAME [--version N]
    coffer-upstream enroll-token create --uses N --expires DURATION --role reader|publisher
                    [--json] | ls [--json] | revoke ID
    coffer-upstream device ls [--json] | revoke ID
    coffer-upstream db upgrade
    coffer-upstream lease-key [--json]
    coffer-upstream trust online-key [--json] | root FILE | targets FILE | status

Every command takes ``--data-dir DIR`` and ``--database-url URL`` (default
SQLite in the data dir; env ``COFFER_UPSTREAM_DATABASE_URL``). ``serve`` and
the admin commands bring an SQLite database up to date themselves; a
PostgreSQL one is upgraded by ``db upgrade`` (one step for every replica).

``serve`` prints ``listening on URL`` as its first stdout line once it accepts
connections (with ``--port 0`` the URL names the port picked), then logs one
line per request to stderr. SIGTERM or SIGINT stops it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from coffer_upstream import admin
from coffer_upstream.accounts import ROLES
from coffer_upstream.config import ServerConfig
from coffer_upstream.db import DatabaseError
from coffer_upstream.serve import bind, serve, url_of


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return admin.run(args)
    except admin.Refused as exc:
        print(f"coffer-upstream: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, ValueError) as exc:
        print(f"coffer-upstream: {exc}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        # The driver's first line only: no URL with a password, no SQL.
        print(f"coffer-upstream: database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, required=True)
    common.add_argument(
        "--database-url",
        default=os.environ.get("COFFER_UPSTREAM_DATABASE_URL"),
        help="SQLAlchemy URL (default sqlite:///DIR/upstream.sqlite3)",
    )
    common.add_argument("--store", choices=("local", "s3"), default="local")
    for option in ("endpoint", "bucket", "region"):
        common.add_argument(
            f"--s3-{option}", default=os.environ.get(f"COFFER_UPSTREAM_S3_{option.upper()}")
        )
    common.add_argument(
        "--s3-part-size",
        type=int,
        default=int(os.environ.get("COFFER_UPSTREAM_S3_PART_SIZE", 64 * 1024 * 1024)),
        metavar="BYTES",
        help="part size offered for multipart uploads (default 64 MiB; at least 5 MiB)",
    )
    parser = argparse.ArgumentParser(
        prog="coffer-upstream", description="The reference upstream of coffer (protocol v1)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_ = commands.add_parser("serve", parents=[common], help="serve the API and the CDN")
    serve_.add_argument("--host", default="127.0.0.1")
    serve_.add_argument("--port", type=port_number, default=8080, help="0 picks a free port")
    serve_.add_argument("--workers", type=int, default=1, metavar="N")
    serve_.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="proxies trusted for X-Forwarded-For (comma-separated); default none",
    )
    serve_.add_argument("--public-url", help="base of the CDN URLs (default http://HOST:PORT)")
    serve_.add_argument("--token-ttl", type=int, default=900, metavar="S")
    serve_.add_argument("--upload-ttl", type=int, default=3600, metavar="S")
    serve_.add_argument("--url-ttl", type=int, default=3600, metavar="S")
    serve_.add_argument("--idle-timeout", type=float, default=120.0, metavar="S")
    serve_.add_argument(
        "--lease-seconds",
        type=int,
        default=7 * 24 * 3600,
        metavar="S",
        help="how long a device may use a resource offline (default 7 days)",
    )
    serve_.add_argument(
        "--audience",
        action="append",
        default=[],
        metavar="URL",
        help="another aud a device's login assertion may name (repeatable; "
        "PUBLIC_URL/v1/token always counts)",
    )
    _expiry_options(serve_)
    serve_.add_argument("--log-level", default="INFO")

    user = commands.add_parser("user", help="manage users")
    users = user.add_subparsers(dest="user_command", required=True)
    add = users.add_parser("add", parents=[common], help="add a user (password on stdin)")
    add.add_argument("email")
    add.add_argument("--role", choices=ROLES, required=True)
    listing = users.add_parser("ls", parents=[common], help="list the users")
    listing.add_argument("--json", action="store_true")
    for name, text in (
        ("disable", "disable a user: its tokens stop working at once"),
        ("enable", "enable a disabled user"),
        ("passwd", "change a password (stdin); the user's tokens stop working"),
    ):
        users.add_parser(name, parents=[common], help=text).add_argument("email")
    role = users.add_parser("role", parents=[common], help="change a user's role")
    role.add_argument("email")
    role.add_argument("role", choices=ROLES)

    resource = commands.add_parser("resource", help="manage resources")
    resources = resource.add_subparsers(dest="resource_command", required=True)
    rls = resources.add_parser("ls", parents=[common], help="list resource versions")
    rls.add_argument("folder", nargs="?")
    rls.add_argument("--json", action="store_true")
    rm = resources.add_parser("rm", parents=[common], help="delete a resource or one version")
    rm.add_argument("folder")
    rm.add_argument("name")
    rm.add_argument("--version", type=int)

    enroll = commands.add_parser("enroll-token", help="manage the tokens devices enroll with")
    enrolls = enroll.add_subparsers(dest="token_command", required=True)
    create = enrolls.add_parser(
        "create", parents=[common], help="make a token (printed once, stored hashed)"
    )
    create.add_argument("--uses", type=int, required=True, metavar="N")
    create.add_argument(
        "--expires", type=duration, required=True, metavar="DURATION", help="e.g. 30m, 24h, 7d"
    )
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--json", action="store_true")
    tls = enrolls.add_parser("ls", parents=[common], help="list the tokens (never the tokens)")
    tls.add_argument("--json", action="store_true")
    enrolls.add_parser("revoke", parents=[common], help="revoke a token").add_argument("id")

    device = commands.add_parser("device", help="manage enrolled devices")
    devices = device.add_subparsers(dest="device_command", required=True)
    dls = devices.add_parser("ls", parents=[common], help="list the devices")
    dls.add_argument("--json", action="store_true")
    devices.add_parser(
        "revoke", parents=[common], help="revoke a device: its logins and tokens fail at once"
    ).add_argument("id")

    db = commands.add_parser("db", help="the database")
    dbs = db.add_subparsers(dest="db_command", required=True)
    dbs.add_parser("upgrade", parents=[common], help="bring the schema up to date")

    lease_key = commands.add_parser(
        "lease-key", parents=[common], help="print the public key that signs leases"
    )
    lease_key.add_argument("--json", action="store_true", help="print key_id and public_key")

    trust = commands.add_parser("trust", help="the TUF repository devices verify releases with")
    trusts = trust.add_subparsers(dest="trust_command", required=True)
    online = trusts.add_parser(
        "online-key",
        parents=[common],
        help="print the online key (signs snapshot and timestamp), making it if missing",
    )
    online.add_argument("--json", action="store_true", help="print keyid and key")
    for what, text in (
        ("root", "install a root (the first, or the next: version current+1)"),
        ("targets", "install the top-level targets (signed by root's targets keys)"),
    ):
        install = trusts.add_parser(what, parents=[common], help=text)
        install.add_argument("file", type=Path, metavar="FILE")
        _expiry_options(install)
    trusts.add_parser("status", parents=[common], help="each role's version and expiry")
    return parser


def _expiry_options(parser: argparse.ArgumentParser) -> None:
    """The lifetimes of what the online key signs (and re-signs), in seconds."""
    parser.add_argument(
        "--snapshot-expiry", type=int, default=7 * 86400, metavar="S", help="default 7 days"
    )
    parser.add_argument(
        "--timestamp-expiry", type=int, default=86400, metavar="S", help="default 1 day"
    )


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest an enrollment token may live.
MAX_DURATION = 366 * 86400


def duration(text: str) -> int:
    """Seconds of ``30m``, ``24h``, ``7d`` (or ``90s``): from 1 s to a year."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 24h, 7d)")
    seconds = int(number) * _UNITS[unit]
    if not 0 < seconds <= MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r}: from 1s to {MAX_DURATION // 86400}d")
    return seconds


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    admin.prepare_database(args)
    sock = bind(args.host, args.port)
    config = ServerConfig(
        data_dir=args.data_dir,
        database_url=args.database_url,
        store=args.store,
        s3_endpoint=args.s3_endpoint,
        s3_bucket=args.s3_bucket,
        s3_region=args.s3_region,
        s3_part_size=args.s3_part_size,
        public_url=args.public_url or url_of(sock),
        token_ttl=args.token_ttl,
        upload_ttl=args.upload_ttl,
        url_ttl=args.url_ttl,
        idle_timeout=args.idle_timeout,
        lease_seconds=args.lease_seconds,
        snapshot_expiry=args.snapshot_expiry,
        timestamp_expiry=args.timestamp_expiry,
        audiences=tuple(args.audience),
    )
    try:
        return serve(config, sock, args.workers, args.forwarded_allow_ips)
    finally:
        sock.close()
        logging.getLogger("coffer_upstream").info("stopped")
