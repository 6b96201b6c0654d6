"""The schema of the first release: originals and derived.

Frozen history: it does not import schema.py, which moves on.  Databases the
first release made have these tables and no alembic_version; they are taken
to be at this revision.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _file_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("byte_length", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    # Names spelled out (op.f: final) as schema.metadata's naming convention
    # made them, so later revisions can refer to them.
    op.create_table(
        "originals",
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("generation", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_file_columns(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_originals")),
        sa.CheckConstraint("status IN ('pending', 'ready', 'deleting')", name=op.f("ck_originals_status")),
    )
    op.create_index(op.f("ix_originals_status"), "originals", ["status"])
    op.create_table(
        "derived",
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        *_file_columns(),
        sa.PrimaryKeyConstraint("image_id", "variant", name=op.f("pk_derived")),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["originals.image_id"],
            name=op.f("fk_derived_image_id_originals"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("derived")
    op.drop_index(op.f("ix_originals_status"), table_name="originals")
    op.drop_table("originals")
