"""
Whole transactions on the metadata, as plain synchronous functions.

Each *_txn function takes a Connection already inside a transaction (see
Database.transact) and returns plain values.  Cancelling the Deferred of a
transaction does not stop it once its thread has started, so each write is
safe to run twice or to race with itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeVar

from sqlalchemy import ColumnElement, Connection, Row, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pymager_tx.adapters.sql.schema import derivation_claims, derived, originals, removal_counter
from pymager_tx.core.errors import ImageIdTaken
from pymager_tx.core.formats import format_named
from pymager_tx.core.model import DerivedRecord, OriginalRecord, OriginalStatus, StoredFile

R = TypeVar("R", bound=StoredFile)


@dataclass(frozen=True)
class DerivedLookup:
    original: OriginalRecord | None
    derived: DerivedRecord | None


@dataclass(frozen=True)
class Removal:
    """What deleting an original must remove from storage."""

    original: OriginalRecord
    derived_keys: tuple[str, ...]
    owner: str | None = None  # the process that holds it, while pending


class ClaimOutcome(Enum):
    CLAIMED = "claimed"  # ours to derive
    HELD = "held"  # another process is deriving it
    DONE = "done"  # already derived: read its row
    GONE = "gone"  # the original (this generation of it) is not ready


@dataclass(frozen=True)
class Claim:
    image_id: str
    variant: str
    generation: str
    owner: str
    # Names the one file this claim's holder may write (empty for claims of
    # releases before tokens), and fences the holder: it records its result
    # only while its claim still carries this token.
    token: str = ""


@dataclass(frozen=True)
class RowState:
    """What one statement read of an original's row: every destructive step
    taken from it is conditional on the row still being in this state."""

    image_id: str
    generation: str
    status: OriginalStatus
    owner: str | None


class Recorded(Enum):
    RECORDED = "recorded"  # the row names our file now
    ALREADY = "already"  # another holder's row was there first: ours is surplus
    LOST = "lost"  # our claim was taken over: we may not record
    GONE = "gone"  # the original (this generation of it) is not ready any more


def database_now(conn: Connection) -> datetime:
    """The database's clock: leases are judged by one clock for every
    process, however far apart their own clocks are."""
    if conn.dialect.name == "sqlite":
        text = conn.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar_one()
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    value: datetime = conn.execute(select(func.now())).scalar_one()
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _record(kind: type[R], row: Row[tuple[object, ...]]) -> R:
    values = dict(row._mapping)
    values["media_type"] = format_named(values["format"]).media_type
    if "status" in values:
        values["status"] = OriginalStatus(values["status"])
    names = {field.name for field in fields(kind)}
    return kind(**{name: value for name, value in values.items() if name in names})


def _original(row: Row[tuple[object, ...]]) -> OriginalRecord:
    return _record(OriginalRecord, row)


def _derived(row: Row[tuple[object, ...]]) -> DerivedRecord:
    return _record(DerivedRecord, row)


def _row(record: StoredFile, table: Table) -> dict[str, object]:
    """The column values of record (media_type is derived from format, not stored)."""
    return {
        column.name: getattr(record, column.name) for column in table.columns if hasattr(record, column.name)
    }


def find_original_txn(
    conn: Connection, image_id: str, statuses: Sequence[OriginalStatus] = (OriginalStatus.READY,)
) -> OriginalRecord | None:
    row = conn.execute(
        select(originals).where(
            originals.c.image_id == image_id,
            originals.c.status.in_([status.value for status in statuses]),
        )
    ).first()
    return None if row is None else _original(row)


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
            insert(originals).values(**_row(record, originals), updated_at=record.created_at, owner=owner)
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
    conn.execute(update(removal_counter).values(value=removal_counter.c.value + 1))
    return _removal(conn, image_id, generation)


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
        conn.execute(update(removal_counter).values(value=removal_counter.c.value + 1))
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
    return Removal(_original(row), tuple(keys), row.owner)


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
        select(originals.c.image_id, originals.c.generation, originals.c.status, originals.c.owner).where(
            originals.c.status != OriginalStatus.READY.value
        )
    ).all()
    return [RowState(row.image_id, row.generation, OriginalStatus(row.status), row.owner) for row in rows]


def lookup_derived_txn(conn: Connection, image_id: str, variant: str) -> DerivedLookup:
    original = find_original_txn(conn, image_id)
    if original is None:
        return DerivedLookup(None, None)
    row = conn.execute(
        select(derived).where(derived.c.image_id == image_id, derived.c.variant == variant)
    ).first()
    return DerivedLookup(original, None if row is None else _derived(row))


def record_derived_txn(conn: Connection, record: DerivedRecord, generation: str, claim: Claim) -> Recorded:
    """Record a derived image whose file (record.blob_key) is stored, if the
    holder still holds claim and its original (this generation of it) is
    still ready.  The claim ends with the record; otherwise it stays, so
    that the holder removes its file before it ends the claim (and if the
    holder dies first, recovery finds the file through the claim)."""
    # FOR UPDATE: a peer taking over the claim now waits for this
    # transaction, and then finds it gone.
    held = conn.execute(select(derivation_claims.c.token).where(*_holding(claim)).with_for_update()).first()
    if held is None:
        return Recorded.LOST
    # FOR SHARE (PostgreSQL) holds off a concurrent begin_removal_txn until
    # this commits; SQLite serializes writers anyway and ignores it.
    current = conn.execute(
        select(originals.c.image_id)
        .where(
            originals.c.image_id == record.image_id,
            originals.c.generation == generation,
            originals.c.status == OriginalStatus.READY.value,
        )
        .with_for_update(read=True)
    ).first()
    if current is None:
        return Recorded.GONE
    try:
        with conn.begin_nested():
            conn.execute(insert(derived).values(**_row(record, derived)))
    except IntegrityError:
        # A holder whose claim lapsed recorded the same rendition first.
        return Recorded.ALREADY
    conn.execute(delete(derivation_claims).where(*_holding(claim)))
    return Recorded.RECORDED


def forget_derived_txn(conn: Connection, record: DerivedRecord) -> None:
    """Delete the row of record, and no newer row of the same rendition."""
    conn.execute(
        delete(derived).where(
            derived.c.image_id == record.image_id,
            derived.c.variant == record.variant,
            derived.c.blob_key == record.blob_key,
        )
    )


def ping_txn(conn: Connection) -> None:
    conn.execute(select(1)).scalar_one()


def claim_derivation_txn(
    conn: Connection, image_id: str, variant: str, generation: str, owner: str, token: str, lease: timedelta
) -> tuple[ClaimOutcome, Claim | None]:
    """Claim the derivation of a rendition for owner, with a new token, for
    lease (by the database's clock), unless it is done, its original is
    gone, or a live claim of another owner holds it.  Returns the claim
    made, or the claim that holds it.

    An expired claim is taken over: its owner died or stalled, and deriving
    twice is better than never; the stalled holder's own token then fences
    it from recording (record_derived_txn).
    """
    original = find_original_txn(conn, image_id)
    if original is None or original.generation != generation:
        return ClaimOutcome.GONE, None
    now = database_now(conn)
    ours = Claim(image_id, variant, generation, owner, token)
    values = {"generation": generation, "owner": owner, "token": token, "expires_at": now + lease}
    key = (derivation_claims.c.image_id == image_id, derivation_claims.c.variant == variant)
    try:
        with conn.begin_nested():
            conn.execute(insert(derivation_claims).values(image_id=image_id, variant=variant, **values))
    except IntegrityError:
        # Conditional on the lease having run out, so of several processes
        # taking over one expired claim, one wins.  A claim of our own (of an
        # older upload under this ID) is ours to take: its holder here is
        # fenced by its token.
        taken = conn.execute(
            update(derivation_claims)
            .where(*key, (derivation_claims.c.expires_at < now) | (derivation_claims.c.owner == owner))
            .values(**values)
        )
        if taken.rowcount != 1:
            row = conn.execute(select(derivation_claims).where(*key)).first()
            return ClaimOutcome.HELD, None if row is None else _claim(row)
    # Only now, holding the claim: a holder that finished just before (its
    # row recorded and its claim ended in one transaction, which our insert
    # waited for) is visible to this statement, even under READ COMMITTED.
    done = conn.execute(
        select(derived.c.image_id).where(derived.c.image_id == image_id, derived.c.variant == variant)
    ).first()
    if done is not None:
        release_claim_txn(conn, ours)
        return ClaimOutcome.DONE, None
    return ClaimOutcome.CLAIMED, ours


def renew_claim_txn(conn: Connection, claim: Claim, lease: timedelta) -> bool:
    """Extend claim by lease from now (the database's clock); False if it
    was lost (expired and taken over)."""
    result = conn.execute(
        update(derivation_claims).where(*_holding(claim)).values(expires_at=database_now(conn) + lease)
    )
    return result.rowcount == 1


def release_claim_txn(conn: Connection, claim: Claim) -> None:
    """End claim, if it is still this very claim (its token)."""
    conn.execute(delete(derivation_claims).where(*_holding(claim)))


def claims_txn(conn: Connection) -> list[Claim]:
    """Every derivation claim: the caller tells the dead from the living."""
    return [_claim(row) for row in conn.execute(select(derivation_claims)).all()]


def take_over_claim_txn(conn: Connection, claim: Claim, owner: str, lease: timedelta) -> bool:
    """Make a dead holder's claim owner's, keeping its token (and so the
    name of the file the dead holder may have stored), if it is still that
    claim.  If owner dies in turn before releasing it, the claim still
    names that file for whoever settles it next."""
    taken = conn.execute(
        update(derivation_claims)
        .where(*_holding(claim))
        .values(owner=owner, expires_at=database_now(conn) + lease)
    )
    return taken.rowcount == 1


def names_blob_txn(conn: Connection, blob_key: str) -> bool:
    """Whether a row of either table names blob_key."""
    for table in (originals, derived):
        if conn.execute(select(table.c.image_id).where(table.c.blob_key == blob_key)).first() is not None:
            return True
    return False


def _holding(claim: Claim) -> tuple[ColumnElement[bool], ...]:
    return (
        derivation_claims.c.image_id == claim.image_id,
        derivation_claims.c.variant == claim.variant,
        derivation_claims.c.owner == claim.owner,
        derivation_claims.c.token == claim.token,
    )


def _claim(row: Row[tuple[object, ...]]) -> Claim:
    return Claim(row.image_id, row.variant, row.generation, row.owner, row.token)


@dataclass(frozen=True)
class StoreIndex:
    """What the metadata says should be in storage, for consistency checks."""

    ready_originals: dict[str, tuple[str, str]]  # blob key -> (image ID, generation)
    unfinished_originals: dict[str, str]  # blob key -> image ID, pending or deleting
    derived: dict[str, str]  # blob key -> image ID
    claimed: dict[str, Claim]  # blob key a claimed derivation will write -> claim

    def references(self, key: str) -> bool:
        return any(key in keys for keys in (self.ready_originals, self.unfinished_originals, self.derived))


def store_index_txn(conn: Connection, claim_key: Callable[[Claim], str]) -> StoreIndex:
    """Read with Database.read, whose transactions see one snapshot of the
    database (PostgreSQL's REPEATABLE READ; SQLite's read transactions):
    work that finishes between these statements (a derived row recorded
    and its claim ended) is seen either wholly before or wholly after."""
    ready: dict[str, tuple[str, str]] = {}
    unfinished: dict[str, str] = {}
    for row in conn.execute(
        select(originals.c.image_id, originals.c.generation, originals.c.status, originals.c.blob_key)
    ):
        if row.status == OriginalStatus.READY.value:
            ready[row.blob_key] = (row.image_id, row.generation)
        else:
            unfinished[row.blob_key] = row.image_id
    rendered = {
        row.blob_key: row.image_id for row in conn.execute(select(derived.c.image_id, derived.c.blob_key))
    }
    claims = [_claim(row) for row in conn.execute(select(derivation_claims))]
    return StoreIndex(ready, unfinished, rendered, {claim_key(claim): claim for claim in claims})


def forget_derived_key_txn(conn: Connection, blob_key: str) -> None:
    conn.execute(delete(derived).where(derived.c.blob_key == blob_key))
