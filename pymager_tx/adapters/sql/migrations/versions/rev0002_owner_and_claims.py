"""Several processes on one database: originals.owner and derivation_claims.

owner names the process holding a pending upload (NULL on rows the first
release wrote: none of them is held by a live process of this release).

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
    # Batch: on SQLite, Alembic copies the table if an operation needs it
    # (adding a nullable column does not, so this stays one ALTER).
    with op.batch_alter_table("originals") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    op.create_table(
        "derivation_claims",
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("generation", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "variant", name=op.f("pk_derivation_claims")),
    )


def downgrade() -> None:
    op.drop_table("derivation_claims")
    # Never the copy: on SQLite, dropping the old originals would cascade to
    # derived (foreign keys are on, and cannot be turned off inside the
    # transaction).  SQLite 3.35 and newer drop a column in place.
    with op.batch_alter_table("originals", recreate="never") as batch:
        batch.drop_column("owner")
