"""Focal points, and what GET /meta tells of an original besides its file:
its BlurHash placeholder and dominant colour (computed at upload; null for
the originals stored before, until GET /meta computes them).

Renditions record the focal point's version they were made for, so that a
change of the focal point makes the crops made before it unreachable.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Never the copy: on SQLite, dropping the old originals would cascade to
# derived (foreign keys are on, and cannot be turned off inside the
# transaction).  SQLite adds columns in place, and 3.35 and newer drop them.


def upgrade() -> None:
    with op.batch_alter_table("originals", recreate="never") as table:
        table.add_column(sa.Column("focal_x", sa.Float(), nullable=True))
        table.add_column(sa.Column("focal_y", sa.Float(), nullable=True))
        table.add_column(sa.Column("focus_version", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("blurhash", sa.String(length=100), nullable=True))
        table.add_column(sa.Column("dominant_color", sa.String(length=7), nullable=True))
    with op.batch_alter_table("derived", recreate="never") as table:
        table.add_column(sa.Column("focus_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("derived", recreate="never") as table:
        table.drop_column("focus_version")
    with op.batch_alter_table("originals", recreate="never") as table:
        table.drop_column("dominant_color")
        table.drop_column("blurhash")
        table.drop_column("focus_version")
        table.drop_column("focal_y")
        table.drop_column("focal_x")
