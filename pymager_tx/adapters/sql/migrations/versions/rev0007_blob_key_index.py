"""An index on the blob key of both image tables, so that `pymager-admin
check` reads the rows of one shard of the store at a time (a range of keys)
instead of every row at once.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_originals_blob_key"), "originals", ["blob_key"])
    op.create_index(op.f("ix_derived_blob_key"), "derived", ["blob_key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_derived_blob_key"), table_name="derived")
    op.drop_index(op.f("ix_originals_blob_key"), table_name="originals")
