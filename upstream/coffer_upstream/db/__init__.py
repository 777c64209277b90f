"""The database: an engine for a URL, and its schema brought up to date by Alembic.

SQLite (the embedded default) gets WAL, a busy timeout, and ``BEGIN
IMMEDIATE`` for transactions that write, so two writers queue instead of
failing on an upgrade from a read lock. PostgreSQL is the choice for more than
one replica; any URL SQLAlchemy knows is taken as given.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

#: What the app answers 503 for: the database is down, busy or refused a step.
DatabaseError = SQLAlchemyError


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'upstream.sqlite3'}"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: a replica outlives a database restart.
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        # It holds password hashes and keys: only its owner reads it. SQLite
        # gives its -wal and -shm files the same mode.
        os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_engine(url, connect_args={"timeout": 10.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi: sqlite3.Connection, record: Any) -> None:
        # SQLAlchemy begins transactions itself (the "begin" event below).
        dbapi.isolation_level = None
        dbapi.execute("PRAGMA journal_mode=WAL")
        dbapi.execute("PRAGMA synchronous=NORMAL")
        dbapi.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get("write", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
