"""For a fleet: disabled users and token epochs, case-folded email keys, multipart
uploads, and the state replicas share (login failures, refresh tokens, locks).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite has them): the first schema's tables are kept as they are.
    op.add_column("users", sa.Column("email_key", sa.Text))
    op.add_column(
        "users", sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("users", sa.Column("token_epoch", sa.Integer, nullable=False, server_default="0"))
    # Python's casefold, as the app computes it, for the users already there.
    bind = op.get_bind()
    for (email,) in bind.execute(sa.text("SELECT email FROM users")).all():
        bind.execute(
            sa.text("UPDATE users SET email_key = :key WHERE email = :email"),
            {"key": email.casefold(), "email": email},
        )
    op.create_index("uq_users_email_key", "users", ["email_key"], unique=True)
    op.add_column("uploads", sa.Column("multipart_id", sa.Text))
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_login_failures_source", "login_failures", ["source"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_sha256", sa.Text, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_refresh_tokens_email", "refresh_tokens", ["email"])
    op.create_table(
        "locks",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
