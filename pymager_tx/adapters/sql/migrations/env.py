"""Alembic's environment: run the revisions on the caller's connection.

Only online mode on a shared connection: pymager-tx never hands Alembic a
URL, so the schema is always changed inside a transaction pymager-tx holds
(its lock included).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pymager_tx.adapters.sql.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("pymager-tx migrations run on a connection: use `pymager-admin db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters little in place; batch mode copies the table when a
        # future revision needs it, and autogenerate writes batch operations.
        render_as_batch=True,
        compare_type=True,
    )
    # The caller's transaction is the migration's: begin_transaction adds none.
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("pymager-tx migrations have no offline (--sql) mode")
run_migrations()
