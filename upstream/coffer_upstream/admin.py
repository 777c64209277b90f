"""The admin commands: users, resources, the schema, the lease key and the TUF
repository (``trust``), on the shared database.

Each works on the same database and store as the running replicas; a change
(a disabled user, a new password) holds for every replica at the next request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import Engine

from coffer_upstream.accounts import Accounts, NoSuchUser, UserExists
from coffer_upstream.app import make_blobstore
from coffer_upstream.config import ServerConfig
from coffer_upstream.db import default_url, is_sqlite, make_engine, migrate
from coffer_upstream.db.session import Transactions
from coffer_upstream.devices import Devices, NoSuchDevice, NoSuchToken
from coffer_upstream.keys import load_secret
from coffer_upstream.leases import LeaseKey
from coffer_upstream.passwords import hash_password
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store
from coffer_upstream.trust import TrustError
from coffer_upstream.trust.files import Files
from coffer_upstream.trust.onlinekey import OnlineKey
from coffer_upstream.trust.repository import Lifetimes, Repository
from coffer_upstream.uploads import Publisher

_MAX_EMAIL = 254
#: The largest metadata file ``trust root`` and ``trust targets`` read.
MAX_METADATA_FILE = 4 * 1024 * 1024
#: The most devices one enrollment token may enroll.
MAX_USES = 1_000_000


class Refused(Exception):
    """A command refused its input (exit ``code``: 2 for bad input, 1 otherwise)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def engine_for(args: argparse.Namespace) -> Engine:
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return make_engine(args.database_url or default_url(args.data_dir))


def prepare_database(args: argparse.Namespace) -> None:
    """SQLite: bring it up to date. Others: refuse an old schema (``db upgrade`` first)."""
    engine = engine_for(args)
    try:
        if is_sqlite(engine):
            migrate.upgrade(engine)
        elif migrate.current(engine) != migrate.head():
            raise Refused("the database schema is not up to date: run coffer-upstream db upgrade")
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    if args.command == "lease-key":
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = LeaseKey.load_or_create(args.data_dir / "lease-key.pem")
        if args.json:
            print(json.dumps({"key_id": key.key_id, "public_key": key.public_key}))
        else:
            print(key.public_key)
        return 0
    if args.command == "trust" and args.trust_command == "online-key":
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        online = OnlineKey.load_or_create(args.data_dir)
        public = online.public.to_dict()  # {"keytype", "scheme", "keyval"}: as root names it
        if args.json:
            print(json.dumps({"keyid": online.keyid, "key": public}))
        else:
            print(online.keyid)
            print(json.dumps(public))
        return 0
    if args.command == "db":
        engine = engine_for(args)
        try:
            migrate.upgrade(engine)
            print(f"database at revision {migrate.current(engine)}")
        finally:
            engine.dispose()
        return 0
    prepare_database(args)
    engine = engine_for(args)
    try:
        transactions = Transactions(engine)
        if args.command == "user":
            return _user(args, Accounts(transactions))
        if args.command == "enroll-token":
            return _enroll_token(args, Devices(transactions))
        if args.command == "device":
            return _device(args, Devices(transactions))
        if args.command == "trust":
            return _trust(args, transactions)
        return _resource(args, Store(transactions))
    finally:
        engine.dispose()


def _user(args: argparse.Namespace, accounts: Accounts) -> int:
    command = args.user_command
    if command == "ls":
        users = accounts.users()
        if args.json:
            print(
                json.dumps(
                    [{"email": u.email, "role": u.role, "disabled": u.disabled} for u in users]
                )
            )
        for u in [] if args.json else users:
            print(f"{u.email}\t{u.role}\t{'disabled' if u.disabled else 'enabled'}")
        return 0
    email: str = args.email
    try:
        if command == "add":
            _check_email(email)
            password_hash = hash_password(_password())
            try:
                accounts.add_user(email, args.role, password_hash)
            except UserExists as exc:
                raise Refused(f"user {email} already exists") from exc
            print(f"added {args.role} {email}")
        elif command in ("disable", "enable"):
            accounts.set_disabled(email, command == "disable")
            print(f"{command}d {email}")
        elif command == "passwd":
            accounts.set_password(email, hash_password(_password()))
            print(f"changed the password of {email}")
        else:
            accounts.set_role(email, args.role)
            print(f"{email} is now a {args.role}")
    except NoSuchUser as exc:
        raise Refused(f"no user {email}") from exc
    return 0


def _enroll_token(args: argparse.Namespace, devices: Devices) -> int:
    now = int(time.time())
    command = args.token_command
    if command == "create":
        if not 0 < args.uses <= MAX_USES:
            raise Refused(f"--uses must be from 1 to {MAX_USES}", 2)
        expires_at = now + args.expires
        token_id, token = devices.create_token(args.role, args.uses, expires_at, now)
        if args.json:
            fields = {"id": token_id, "token": token, "role": args.role, "uses": args.uses}
            print(json.dumps({**fields, "expires_at": _iso(expires_at)}))
        else:
            # The token alone on stdout (for $(...)); what it is, on stderr.
            print(token)
            print(
                f"enrollment token {token_id}: {args.role}, {args.uses} use(s), expires "
                f"{_iso(expires_at)}; shown once, only its sha256 is kept",
                file=sys.stderr,
            )
        return 0
    if command == "ls":
        tokens = devices.tokens()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "id": t.id,
                            "role": t.role,
                            "uses_left": t.uses_left,
                            "expires_at": _iso(t.expires_at),
                            "created_at": _iso(t.created_at),
                            "revoked_at": _iso(t.revoked_at),
                            "state": t.state(now),
                        }
                        for t in tokens
                    ]
                )
            )
        else:
            print("ID\tROLE\tUSES LEFT\tEXPIRES\tCREATED\tSTATE")
            for t in tokens:
                print(
                    f"{t.id}\t{t.role}\t{t.uses_left}\t{_iso(t.expires_at)}\t"
                    f"{_iso(t.created_at)}\t{t.state(now)}"
                )
        return 0
    try:
        done = devices.revoke_token(args.id, now)
    except NoSuchToken as exc:
        raise Refused(f"no enrollment token {args.id}") from exc
    print(f"revoked enrollment token {args.id}" if done else f"{args.id} was already revoked")
    return 0


def _device(args: argparse.Namespace, devices: Devices) -> int:
    now = int(time.time())
    if args.device_command == "ls":
        found = devices.devices()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "id": d.id,
                            "name": d.name,
                            "public_key": d.public_key_b64,
                            "role": d.role,
                            "enrolled_at": _iso(d.enrolled_at),
                            "last_seen_at": _iso(d.last_seen_at),
                            "revoked_at": _iso(d.revoked_at),
                            "enrolled_with": d.enrolled_with,
                        }
                        for d in found
                    ]
                )
            )
        else:
            print("ID\tNAME\tENROLLED\tLAST SEEN\tROLE\tREVOKED")
            for d in found:
                print(
                    f"{d.id}\t{d.name or '-'}\t{_iso(d.enrolled_at)}\t"
                    f"{_iso(d.last_seen_at) or 'never'}\t{d.role}\t{_iso(d.revoked_at) or 'no'}"
                )
        return 0
    try:
        done = devices.revoke(args.id, now)
    except NoSuchDevice as exc:
        raise Refused(f"no device {args.id}") from exc
    print(f"revoked device {args.id}" if done else f"{args.id} was already revoked")
    return 0


def _trust(args: argparse.Namespace, transactions: Transactions) -> int:
    lifetimes = Lifetimes(
        getattr(args, "snapshot_expiry", None) or Lifetimes.snapshot,
        getattr(args, "timestamp_expiry", None) or Lifetimes.timestamp,
    )
    clock = lambda: int(time.time())  # noqa: E731
    repository = Repository(
        Files(transactions), OnlineKey.load_or_create(args.data_dir), lifetimes, clock
    )
    if args.trust_command == "status":
        for file in repository.status():
            print(f"{file.role}\t{file.version}\texpires {_iso(file.expires)}")
        return 0
    with open(args.file, "rb") as f:
        data = f.read(MAX_METADATA_FILE + 1)
    if len(data) > MAX_METADATA_FILE:
        raise Refused(f"{args.file} is over {MAX_METADATA_FILE} bytes", 2)
    install = {"root": repository.install_root, "targets": repository.install_targets}
    try:
        version = install[args.trust_command](data)
    except TrustError as exc:
        raise Refused(f"refused {args.file}: {exc}", 2) from exc
    print(f"installed {args.trust_command} version {version}; signed a new snapshot and timestamp")
    return 0


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resource(args: argparse.Namespace, store: Store) -> int:
    if args.resource_command == "ls":
        rows = list(store.resources(args.folder))
        if args.json:
            keys = ("folder", "name", "version", "big_size")
            print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows]))
        else:
            for folder, name, version, big_size in rows:
                print(f"{folder}/{name}\t{version}\t{big_size}")
        return 0
    config = ServerConfig(
        data_dir=args.data_dir,
        store=args.store,
        s3_endpoint=args.s3_endpoint,
        s3_bucket=args.s3_bucket,
        s3_region=args.s3_region,
    )
    signer = Signer(load_secret(args.data_dir / "secret"))
    blobs = make_blobstore(config, signer)
    try:
        publisher = Publisher(store, blobs, config.upload_ttl, signer.now)
        deleted = publisher.retire(args.folder, args.name, args.version)
    finally:
        blobs.close()
    if not deleted:
        which = "" if args.version is None else f" version {args.version}"
        raise Refused(f"no resource {args.folder}/{args.name}{which}")
    print(f"deleted {deleted} version(s) of {args.folder}/{args.name}")
    return 0


def _check_email(email: str) -> None:
    if (
        not 0 < len(email) <= _MAX_EMAIL
        or "@" not in email
        or not email.isprintable()
        or any(c.isspace() for c in email)
    ):
        raise Refused("not a usable email address", 2)


def _password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise Refused("refusing an empty password", 2)
    return password
