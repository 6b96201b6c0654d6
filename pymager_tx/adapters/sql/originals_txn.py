"""
Whole transactions on originals and their removal, as plain synchronous
functions.

Each *_txn function takes a Connection already inside a transaction (see
Database.transact) and returns plain values.  Cancelling the Deferred of a
transaction does not stop it once its thread has started, so each write is
safe to run twice or to race with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pymager_tx.adapters.sql.rows import original_of, row_of
from pymager_tx.adapters.sql.schema import derived, originals, removal_counter
from pymager_tx.core.errors import ImageIdTaken
from pymager_tx.core.model import OriginalRecord, OriginalStatus
from pymager_tx.core.records import (
    Removal,
    RowState,
)

# The PostgreSQL channel on which deletions are announced as they commit
# (pymager_tx.adapters.sql.removal_feed listens to it).
REMOVALS_CHANNEL = "pymager_removals"

# Built once: the lookup every request makes costs no statement building.
_READY_ORIGINAL = select(originals).where(
    originals.c.image_id == bindparam("image_id"), originals.c.status == OriginalStatus.READY.value
)


def find_original_txn(
    conn: Connection, image_id: str, statuses: Sequence[OriginalStatus] = (OriginalStatus.READY,)
) -> OriginalRecord | None:
    if tuple(statuses) == (OriginalStatus.READY,):
        row = conn.execute(_READY_ORIGINAL, {"image_id": image_id}).first()
    else:
        row = conn.execute(
            select(originals).where(
                originals.c.image_id == image_id,
                originals.c.status.in_([status.value for status in statuses]),
            )
        ).first()
    return None if row is None else original_of(row)


def status_of_txn(conn: Connection, image_id: str) -> OriginalStatus | None:
    """The status of the original holding this ID, finished or not; None if none does."""
    status = conn.execute(select(originals.c.status).where(originals.c.image_id == image_id)).scalar()
    return None if status is None else OriginalStatus(status)


def claim_original_txn(conn: Connection, record: OriginalRecord, owner: str) -> None:
    """Insert record as pending, held by owner; the primary key lets exactly
    one claim win, across every process."""
    assert record.status is OriginalStatus.PENDING
    try:
        conn.execute(
            insert(originals).values(**row_of(record, originals), updated_at=record.created_at, owner=owner)
        )
    except IntegrityError:
        raise ImageIdTaken(f"an image is already stored under the ID {record.image_id!r}") from None


def mark_original_ready_txn(conn: Connection, image_id: str, generation: str, now: datetime) -> bool:
    result = conn.execute(
        update(originals)
        .where(
            originals.c.image_id == image_id,
            originals.c.generation == generation,
            originals.c.status == OriginalStatus.PENDING.value,
        )
        .values(status=OriginalStatus.READY.value, created_at=now, updated_at=now, owner=None)
    )
    return result.rowcount == 1


def forget_original_txn(conn: Connection, image_id: str, generation: str) -> None:
    """Delete the row of this upload once it is being deleted (its derived
    rows go with it); any other state of the row is left alone."""
    conn.execute(
        delete(originals).where(
            originals.c.image_id == image_id,
            originals.c.generation == generation,
            originals.c.status == OriginalStatus.DELETING.value,
        )
    )


def begin_removal_txn(
    conn: Connection, image_id: str, now: datetime, owner: str | None = None
) -> Removal | None:
    """Mark the original under image_id as being deleted, whichever upload
    it is (a client's DELETE), and list what to remove.

    From here on nobody sees it, and no new derived row can be recorded for
    it (record_derived_txn checks the status under a shared row lock), so
    the list of derived keys is complete.  A removal that failed half-way
    is picked up again, so one failure never strands the ID.
    """
    marked = conn.execute(
        update(originals)
        .where(
            originals.c.image_id == image_id,
            originals.c.status.in_([OriginalStatus.READY.value, OriginalStatus.DELETING.value]),
        )
        .values(status=OriginalStatus.DELETING.value, updated_at=now, owner=owner)
    )
    if marked.rowcount != 1:
        return None
    # The row is locked by the update: this reads the very row it marked.
    generation = conn.execute(
        select(originals.c.generation).where(originals.c.image_id == image_id)
    ).scalar_one()
    count_removal(conn, owner)
    return _removal(conn, image_id, generation)


def count_removal(conn: Connection, owner: str | None) -> None:
    """A deletion begins: increment the removal counter, which every process
    polls, and on PostgreSQL tell every listening process at once (NOTIFY is
    delivered when this transaction commits, and never if it rolls back).
    The payload names the deleting process, which has voided its own
    memory already."""
    conn.execute(update(removal_counter).values(value=removal_counter.c.value + 1))
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(REMOVALS_CHANNEL, owner or "")))


def resume_removal_txn(conn: Connection, image_id: str, generation: str) -> Removal | None:
    """What is left to remove of this upload's interrupted deletion; None
    unless the row is still this upload, being deleted (a new upload under
    the ID, finished meanwhile, is not touched)."""
    return _removal(conn, image_id, generation, OriginalStatus.DELETING)


def forget_lost_original_txn(
    conn: Connection, image_id: str, generation: str, now: datetime, owner: str | None = None
) -> Removal | None:
    """Mark this ready upload, whose file is lost, as being deleted; None if
    the row is no longer that ready upload (deleted, or uploaded again)."""
    return _mark_deleting(conn, image_id, generation, OriginalStatus.READY, now, owner)


def removal_count_txn(conn: Connection) -> int:
    """How many deletions have begun, ever (see schema.removal_counter)."""
    value = conn.execute(select(removal_counter.c.value)).scalar()
    return 0 if value is None else int(value)


def abandon_upload_txn(
    conn: Connection, image_id: str, generation: str, now: datetime, owner: str | None = None
) -> Removal | None:
    """Mark this upload's pending row as being deleted, if it is still
    pending, and list what to remove; None if it was settled meanwhile."""
    return _mark_deleting(conn, image_id, generation, OriginalStatus.PENDING, now, owner)


def _mark_deleting(
    conn: Connection,
    image_id: str,
    generation: str,
    status: OriginalStatus,
    now: datetime,
    owner: str | None,
) -> Removal | None:
    marked = conn.execute(
        update(originals)
        .where(
            originals.c.image_id == image_id,
            originals.c.generation == generation,
            originals.c.status == status.value,
        )
        .values(status=OriginalStatus.DELETING.value, updated_at=now, owner=owner)
    )
    if marked.rowcount != 1:
        return None
    if status is OriginalStatus.READY:
        count_removal(conn, owner)
    return _removal(conn, image_id, generation)


def _removal(
    conn: Connection, image_id: str, generation: str, status: OriginalStatus | None = None
) -> Removal | None:
    """What removing this upload takes: its row (in status, if given) and
    the keys of its derived rows.  Derived rows hang off the ID, and an ID
    has one row, so while this upload's row stands they are all its own."""
    conditions = [originals.c.image_id == image_id, originals.c.generation == generation]
    if status is not None:
        conditions.append(originals.c.status == status.value)
    row = conn.execute(select(originals).where(*conditions)).first()
    if row is None:
        return None
    keys = conn.execute(select(derived.c.blob_key).where(derived.c.image_id == image_id)).scalars().all()
    return Removal(original_of(row), tuple(keys), row.owner)


def row_state_txn(conn: Connection, image_id: str) -> RowState | None:
    """The row holding image_id, whatever its status; None if none does."""
    row = conn.execute(
        select(originals.c.image_id, originals.c.generation, originals.c.status, originals.c.owner).where(
            originals.c.image_id == image_id
        )
    ).first()
    return (
        None if row is None else RowState(row.image_id, row.generation, OriginalStatus(row.status), row.owner)
    )


def removal_txn(conn: Connection, image_id: str) -> Removal | None:
    """What removing the original under image_id would take, whatever its state."""
    state = row_state_txn(conn, image_id)
    return None if state is None else _removal(conn, image_id, state.generation)


def unfinished_txn(conn: Connection) -> list[RowState]:
    """Uploads and deletions under way or interrupted, read in one statement:
    the caller acts on each only through a transaction conditional on the
    state read here (abandon_upload_txn, resume_removal_txn)."""
    rows = conn.execute(
        # "In" the states that are not ready, not "!= ready": a range of the
        # status index, where "!=" scans every original (0.1-0.7 s at a
        # million, bench/scale.py), and the periodic sweep asks every minute.
        select(originals.c.image_id, originals.c.generation, originals.c.status, originals.c.owner).where(
            originals.c.status.in_(
                [state.value for state in OriginalStatus if state is not OriginalStatus.READY]
            )
        )
    ).all()
    return [RowState(row.image_id, row.generation, OriginalStatus(row.status), row.owner) for row in rows]
