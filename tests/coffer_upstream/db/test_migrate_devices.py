"""Migration 0003 (device identities) on both databases: from 0002 with data in
it, to a schema that is exactly the models'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select

from coffer_upstream.db import make_engine, migrate
from coffer_upstream.db.models import Base, User
from fixtures.postgres import Postgres


@pytest.fixture
def engine(
    upstream_database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Engine]:
    if upstream_database == "postgresql":
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.create_database()
    else:
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = make_engine(url)
    yield made
    made.dispose()


def _upgrade_to(engine: Engine, revision: str) -> None:
    config = migrate._config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_0003_adds_the_device_tables_and_keeps_the_users(engine: Engine) -> None:
    _upgrade_to(engine, "0002")
    with engine.begin() as db:
        db.execute(
            insert(User).values(
                email="a@example.com",
                email_key="a@example.com",
                role="reader",
                password_hash="x",
                disabled=False,
                token_epoch=0,
            )
        )
    assert "devices" not in inspect(engine).get_table_names()
    _upgrade_to(engine, "0003")
    assert migrate.current(engine) == "0003"
    tables = set(inspect(engine).get_table_names())
    assert {"devices", "enrollment_tokens", "assertion_jtis"} <= tables
    with engine.connect() as db:
        assert db.execute(select(User.email)).scalars().all() == ["a@example.com"]


def test_the_migrated_schema_is_the_models(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.connect() as db:
        differences = compare_metadata(MigrationContext.configure(db), Base.metadata)
    # The users table keeps what 0002 made of the first schema (an index for a
    # unique constraint); the tables of 0003 are exactly the models'.
    about_devices = [
        d
        for d in differences
        if any(t in repr(d) for t in ("devices", "enrollment_tokens", "assertion_jtis"))
    ]
    assert about_devices == []
    assert all("users" in repr(d) for d in differences), differences
