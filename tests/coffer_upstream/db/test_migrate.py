"""Migrations: a new database is made at head; a data dir of the first schema is adopted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import requests
from sqlalchemy import inspect

from coffer_upstream.db import make_engine, migrate
from coffer_upstream.db.session import Transactions
from coffer_upstream.passwords import hash_password
from coffer_upstream.store import Listed, Store
from fixtures import zygote
from fixtures.upstream import COMMAND, Account, Upstream

#: What store.py made before migrations (with versions.created_at, added to it later).
FIRST_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    email TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('reader', 'publisher')),
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    small BLOB NOT NULL,
    key BLOB NOT NULL,
    blob_id TEXT NOT NULL UNIQUE,
    big_size INTEGER NOT NULL,
    big_sha256 TEXT NOT NULL,
    plaintext_size INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER,
    PRIMARY KEY (folder, name, version)
);
CREATE TABLE IF NOT EXISTS retired (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    last_version INTEGER NOT NULL,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    put_size INTEGER,
    put_sha256 TEXT,
    put_fingerprint TEXT,
    committed_version INTEGER
);
CREATE TABLE IF NOT EXISTS archive_keys (
    archive_id TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created_by TEXT NOT NULL
);
"""


def _old_data_dir(tmp_path: Path, with_created_at: bool) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = sqlite3.connect(data_dir / "upstream.sqlite3")
    schema = (
        FIRST_SCHEMA
        if with_created_at
        else FIRST_SCHEMA.replace(
            "    created_by TEXT NOT NULL,\n    created_at INTEGER,",
            "    created_by TEXT NOT NULL,",
        )
    )
    db.executescript(schema)
    db.execute("INSERT INTO users VALUES ('Old@Example.com', 'reader', ?)", (hash_password("pw"),))
    db.execute(
        "INSERT INTO versions (folder, name, version, small, key, blob_id, big_size,"
        " big_sha256, plaintext_size, created_by) VALUES"
        " ('models', 'm', 1, x'00', x'00', 'b', 5, 'ab', 3, 'p')"
    )
    db.commit()
    db.close()
    return data_dir


def test_a_new_database_is_made_at_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    try:
        assert migrate.current(engine) is None
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        tables = set(inspect(engine).get_table_names())
        assert {"users", "versions", "uploads", "locks", "refresh_tokens"} <= tables
        migrate.upgrade(engine)  # again: nothing to do
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_a_data_dir_from_before_listings_lists_unknown_times(tmp_path: Path) -> None:
    data_dir = _old_data_dir(tmp_path, with_created_at=False)
    engine = make_engine(f"sqlite:///{data_dir / 'upstream.sqlite3'}")
    try:
        migrate.upgrade(engine)
        store = Store(Transactions(engine))
        assert store.current_versions("models", "", 10) == [Listed("m", 1, 3, 5, None)]
    finally:
        engine.dispose()


def test_a_data_dir_of_the_first_schema_is_served_after_an_upgrade(tmp_path: Path) -> None:
    data_dir = _old_data_dir(tmp_path, with_created_at=True)
    account = Account("old@example.com", "pw", "reader")
    # serve upgrades it itself; the user of the old table logs in, any case of its email.
    with Upstream(data_dir, account, account) as upstream:
        assert upstream.login(account)
        token = upstream.login(Account("OLD@EXAMPLE.COM", "pw", "reader"))
        listing = requests.get(
            f"{upstream.url}/v1/resources/models",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert listing.json()["items"][0]["name"] == "m"
    done = zygote.run(
        [*COMMAND, "db", "upgrade", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert migrate.head() in done.stdout  # type: ignore[operator]
