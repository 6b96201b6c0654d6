"""The listing of stored originals, a page at a time (GET /originals)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from pymager_tx.adapters.sql.rows import original_of
from pymager_tx.adapters.sql.schema import originals
from pymager_tx.core.model import OriginalRecord, OriginalStatus


def page_query(dialect: str, after: str | None, limit: int) -> Select[Any]:
    """A keyset page: the primary key's index serves both the range and the
    order, so a page costs O(limit) however many originals are stored (no
    OFFSET, which would read every row before the page)."""
    status: ColumnElement[Any] = originals.c.status
    if dialect == "sqlite":
        # Through an expression no index matches: else SQLite, which keeps
        # no statistics, takes the status index and sorts every ready row.
        # (PostgreSQL knows nearly every row is ready, and would misjudge
        # the expression as rare.)
        status = status.concat("")
    query = select(originals).where(status == OriginalStatus.READY.value)
    if after is not None:
        query = query.where(originals.c.image_id > after)
    return query.order_by(originals.c.image_id).limit(limit)


def list_originals_txn(conn: Connection, after: str | None, limit: int) -> list[OriginalRecord]:
    """At most limit ready originals whose IDs come after `after`, in the
    order of IDs (the database's: its collation, on PostgreSQL)."""
    query = page_query(conn.dialect.name, after, limit)
    return [original_of(row) for row in conn.execute(query).all()]
