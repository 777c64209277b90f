"""Device identities (issue 19): enrolled devices, enrollment tokens, and the
``jti`` of login assertions already used (replays refused on every replica).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("enrolled_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
        sa.Column("enrolled_with", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("public_key", name="uq_devices_public_key"),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("token_sha256", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_enrollment_tokens_token_sha256"),
    )
    op.create_table(
        "assertion_jtis",
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "jti", name="pk_assertion_jtis"),
    )
    op.create_index("ix_assertion_jtis_expires_at", "assertion_jtis", ["expires_at"])
