"""The admin commands: users, resources, the schema and the lease key, on the shared database.

Each works on the same database and store as the running replicas; a change
(a disabled user, a new password) holds for every replica at the next request.
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy import Engine

from coffer_upstream.accounts import Accounts, NoSuchUser, UserExists
from coffer_upstream.app import make_blobstore
from coffer_upstream.config import ServerConfig
from coffer_upstream.db import default_url, is_sqlite, make_engine, migrate
from coffer_upstream.db.session import Transactions
from coffer_upstream.keys import load_secret
from coffer_upstream.leases import LeaseKey
from coffer_upstream.passwords import hash_password
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store
from coffer_upstream.uploads import Publisher

_MAX_EMAIL = 254


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
