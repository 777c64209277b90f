"""Migration 0004 (trust) on both databases: from 0003 with versions in it, to
a schema that is exactly the models'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from coffer_upstream.db import make_engine, migrate
from coffer_upstream.db.models import Base, TufMetadata, Version
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


def test_0004_adds_the_metadata_table_and_keeps_the_versions(engine: Engine) -> None:
    config = migrate._config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    with engine.begin() as db:
        # The columns 0003 knows (the model has more now).
        db.exec_driver_sql(
            "INSERT INTO versions (folder, name, version, small, key, blob_id, big_size, "
            "big_sha256, plaintext_size, created_by, created_at) VALUES "
            "('m', 'x', 1, 'small', 'key', 'b1', 5, 'ab', 4, 'p@example.com', 7)"
        )
    migrate.upgrade(engine)
    assert migrate.current(engine) == "0004" == migrate.head()
    assert "tuf_metadata" in inspect(engine).get_table_names()
    with engine.begin() as db:
        row = db.execute(select(Version.version, Version.segment_size, Version.segments)).one()
        assert tuple(row) == (1, None, None)
        values = {"role": "root", "version": 1, "data": b"{}", "expires": 1}
        db.execute(insert(TufMetadata).values(**values))
    # (role, version) is unique.
    with pytest.raises(IntegrityError), engine.begin() as db:
        db.execute(insert(TufMetadata).values(**{**values, "data": b"[]"}))


def test_the_trust_schema_is_the_models(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.connect() as db:
        differences = compare_metadata(MigrationContext.configure(db), Base.metadata)
    about_trust = [d for d in differences if any(t in repr(d) for t in ("tuf_metadata", "segment"))]
    assert about_trust == []
