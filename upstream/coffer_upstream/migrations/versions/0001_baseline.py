"""The first schema (what store.py made before migrations), adopted where it exists.

A data dir from before migrations has these tables and no ``alembic_version``:
each table is made only if absent, and ``versions.created_at`` (added to that
schema later) is added if missing, so such a data dir upgrades in place.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # SQLite matched emails with NOCASE; PostgreSQL gets the case-folded key in 0002.
    email = sa.Text(collation="NOCASE") if sqlite else sa.Text()
    op.create_table(
        "users",
        sa.Column("email", email, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.CheckConstraint("role IN ('reader', 'publisher')", name="ck_users_role"),
        if_not_exists=True,
    )
    op.create_table(
        "versions",
        sa.Column("folder", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("small", sa.LargeBinary, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("blob_id", sa.Text, nullable=False, unique=True),
        sa.Column("big_size", sa.BigInteger, nullable=False),
        sa.Column("big_sha256", sa.Text, nullable=False),
        sa.Column("plaintext_size", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger),
        if_not_exists=True,
    )
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("versions")}
    if "created_at" not in columns:
        op.add_column("versions", sa.Column("created_at", sa.BigInteger))
    op.create_table(
        "retired",
        sa.Column("folder", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("last_version", sa.Integer, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.Text, primary_key=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("blob_id", sa.Text, nullable=False, unique=True),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("put_size", sa.BigInteger),
        sa.Column("put_sha256", sa.Text),
        sa.Column("put_fingerprint", sa.Text),
        sa.Column("committed_version", sa.Integer),
        if_not_exists=True,
    )
    op.create_table(
        "archive_keys",
        sa.Column("archive_id", sa.Text, primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        if_not_exists=True,
    )
