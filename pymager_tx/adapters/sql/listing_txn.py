"""The listing of stored originals, a page at a time (GET /originals)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from pymager_tx.adapters.sql.rows import original_of
from pymager_tx.adapters.sql.schema import originals
from pymager_tx.core.model import OriginalRecord, OriginalStatus


def list_originals_txn(conn: Connection, after: str | None, limit: int) -> list[OriginalRecord]:
    """At most limit ready originals whose IDs come after `after`, in the
    order of IDs.  The primary key's index serves both the range and the
    order, so a page costs O(limit) however many originals are stored (a
    keyset page: no OFFSET, which would read every row before the page)."""
    query = select(originals).where(originals.c.status == OriginalStatus.READY.value)
    if after is not None:
        query = query.where(originals.c.image_id > after)
    rows = conn.execute(query.order_by(originals.c.image_id).limit(limit)).all()
    return [original_of(row) for row in rows]
