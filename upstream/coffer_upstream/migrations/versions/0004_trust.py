"""Trust (issue 20): the TUF metadata the upstream serves, and the segment
manifest of a resource version.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuf_metadata",
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        # (role, version) is unique: a number is never given to two files of a role.
        sa.PrimaryKeyConstraint("role", "version", name="pk_tuf_metadata"),
    )
    # Plain ADD COLUMNs (SQLite has them); versions committed before stay without.
    op.add_column("versions", sa.Column("segment_size", sa.BigInteger))
    op.add_column("versions", sa.Column("segments", sa.LargeBinary))
