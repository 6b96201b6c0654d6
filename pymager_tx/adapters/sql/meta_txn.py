"""
Whole transactions on what GET /meta tells of an original: its renditions,
its focal point, and the summary (BlurHash, dominant colour) of originals
stored before summaries were.  Plain synchronous functions, as the other
*_txn modules.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from pymager_tx.adapters.sql.originals_txn import count_removal, find_original_txn
from pymager_tx.adapters.sql.rows import derived_of, original_of
from pymager_tx.adapters.sql.schema import derived, originals
from pymager_tx.core.model import FocalPoint, OriginalStatus
from pymager_tx.core.records import OriginalMeta, Refocused


def original_meta_txn(conn: Connection, image_id: str) -> OriginalMeta | None:
    """The ready original under image_id and its renditions, by variant."""
    original = find_original_txn(conn, image_id)
    if original is None:
        return None
    rows = conn.execute(select(derived).where(derived.c.image_id == image_id).order_by(derived.c.variant))
    return OriginalMeta(original, tuple(derived_of(row) for row in rows))


def refocus_txn(
    conn: Connection, image_id: str, focal_point: FocalPoint | None, now: datetime, owner: str | None = None
) -> Refocused | None:
    """Set (or clear) the focal point of the ready original under image_id.
    When it changes: its version goes up and the rows of the renditions it
    moves go, their keys returned for the caller to remove.  A rendition
    being derived meanwhile for the old version is refused when it comes to
    be recorded (record_derived_txn checks the version under a shared lock
    of the row this update locks), so none made before survives.  Counted
    as a removal, so that every process stops serving such renditions from
    memory."""
    row = conn.execute(
        select(originals.c.focal_x, originals.c.focal_y)
        .where(originals.c.image_id == image_id, originals.c.status == OriginalStatus.READY.value)
        .with_for_update()
    ).first()
    if row is None:
        return None
    new = (None, None) if focal_point is None else (focal_point.x, focal_point.y)
    keys: tuple[str, ...] = ()
    if (row.focal_x, row.focal_y) != new:
        conn.execute(
            update(originals)
            .where(originals.c.image_id == image_id)
            .values(
                focal_x=new[0],
                focal_y=new[1],
                focus_version=originals.c.focus_version + 1,
                updated_at=now,
            )
        )
        stale = (derived.c.image_id == image_id, derived.c.focus_version.is_not(None))
        keys = tuple(conn.execute(select(derived.c.blob_key).where(*stale)).scalars().all())
        conn.execute(delete(derived).where(*stale))
        # Even with no row to remove: a rendition may be held in memory
        # whose row another process removed and re-derived meanwhile.
        count_removal(conn, owner)
    current = conn.execute(select(originals).where(originals.c.image_id == image_id)).one()
    return Refocused(original_of(current), keys, changed=(row.focal_x, row.focal_y) != new)


def store_summary_txn(
    conn: Connection, image_id: str, generation: str, blurhash: str, dominant_color: str
) -> bool:
    """Record the summary of an original stored without one, if it is still
    that upload and has none yet."""
    result = conn.execute(
        update(originals)
        .where(
            originals.c.image_id == image_id,
            originals.c.generation == generation,
            originals.c.blurhash.is_(None),
        )
        .values(blurhash=blurhash, dominant_color=dominant_color)
    )
    return result.rowcount == 1
