"""A token for every derivation claim: it names the file the claim's holder
writes, and fences a holder that lost its claim from recording its result.

Claims made before this revision keep an empty token (their file has the
rendition's plain key); they are leases of at most 30 seconds.

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
    with op.batch_alter_table("derivation_claims") as table:
        table.add_column(sa.Column("token", sa.String(length=32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("derivation_claims") as table:
        table.drop_column("token")
