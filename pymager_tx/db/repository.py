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
from datetime import datetime
from enum import Enum
from typing import TypeVar

from sqlalchemy import Connection, Row, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pymager_tx.db.schema import derivation_claims, derived, originals, removal_counter
from pymager_tx.errors import ImageIdTaken
from pymager_tx.formats import format_named
from pymager_tx.model import DerivedRecord, OriginalRecord, OriginalStatus, StoredFile

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
    """Delete the row of this upload (its derived rows go with it)."""
    conn.execute(
        delete(originals).where(originals.c.image_id == image_id, originals.c.generation == generation)
    )


def begin_removal_txn(conn: Connection, image_id: str, now: datetime) -> Removal | None:
    """Mark an original as being deleted and list what to remove.

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
        .values(status=OriginalStatus.DELETING.value, updated_at=now)
    )
    if marked.rowcount != 1:
        return None
    conn.execute(update(removal_counter).values(value=removal_counter.c.value + 1))
    return removal_txn(conn, image_id)


def removal_count_txn(conn: Connection) -> int:
    """How many deletions have begun, ever (see schema.removal_counter)."""
    value = conn.execute(select(removal_counter.c.value)).scalar()
    return 0 if value is None else int(value)


def abandon_upload_txn(conn: Connection, image_id: str, generation: str, now: datetime) -> Removal | None:
    """Mark this upload's pending row as being deleted, if it is still
    pending, and list what to remove; None if it was settled meanwhile."""
    marked = conn.execute(
        update(originals)
        .where(
            originals.c.image_id == image_id,
            originals.c.generation == generation,
            originals.c.status == OriginalStatus.PENDING.value,
        )
        .values(status=OriginalStatus.DELETING.value, updated_at=now)
    )
    if marked.rowcount != 1:
        return None
    return removal_txn(conn, image_id)


def removal_txn(conn: Connection, image_id: str) -> Removal | None:
    """What removing the original under image_id would take, whatever its state."""
    row = conn.execute(select(originals).where(originals.c.image_id == image_id)).first()
    if row is None:
        return None
    keys = conn.execute(select(derived.c.blob_key).where(derived.c.image_id == image_id)).scalars().all()
    return Removal(_original(row), tuple(keys), row.owner)


def unfinished_txn(conn: Connection) -> list[Removal]:
    """Uploads and deletions under way or interrupted (the caller tells
    which by the owner of each pending upload)."""
    ids = (
        conn.execute(select(originals.c.image_id).where(originals.c.status != OriginalStatus.READY.value))
        .scalars()
        .all()
    )
    return [removal for image_id in ids if (removal := removal_txn(conn, image_id)) is not None]


def lookup_derived_txn(conn: Connection, image_id: str, variant: str) -> DerivedLookup:
    original = find_original_txn(conn, image_id)
    if original is None:
        return DerivedLookup(None, None)
    row = conn.execute(
        select(derived).where(derived.c.image_id == image_id, derived.c.variant == variant)
    ).first()
    return DerivedLookup(original, None if row is None else _derived(row))


def record_derived_txn(
    conn: Connection, record: DerivedRecord, generation: str, owner: str | None = None
) -> bool:
    """Record a derived image whose file is stored, if its original (this
    generation of it) is still ready; False if it was deleted meanwhile.
    Either way owner's claim on the rendition ends with this transaction."""
    if owner is not None:
        release_claim_txn(conn, record.image_id, record.variant, owner)
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
        return False
    _insert_derived(conn, record)
    return True


def _insert_derived(conn: Connection, record: DerivedRecord) -> None:
    # Another process may record the same rendition at the same moment; its
    # row describes the same file, so losing that race is success too.
    try:
        with conn.begin_nested():
            conn.execute(insert(derived).values(**_row(record, derived)))
    except IntegrityError:
        pass


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
    conn: Connection, image_id: str, variant: str, generation: str, owner: str, now: datetime, until: datetime
) -> tuple[ClaimOutcome, Claim | None]:
    """Claim the derivation of a rendition for owner until a time, unless it
    is done, its original is gone, or a live claim of another owner holds it.

    An expired claim is taken over: its owner died or stalled, and deriving
    twice is better than never.
    """
    original = find_original_txn(conn, image_id)
    if original is None or original.generation != generation:
        return ClaimOutcome.GONE, None
    key = (derivation_claims.c.image_id == image_id, derivation_claims.c.variant == variant)
    try:
        with conn.begin_nested():
            conn.execute(
                insert(derivation_claims).values(
                    image_id=image_id, variant=variant, generation=generation, owner=owner, expires_at=until
                )
            )
    except IntegrityError:
        # Conditional on the lease having run out, so of several processes
        # taking over one expired claim, one wins.
        taken = conn.execute(
            update(derivation_claims)
            .where(*key, (derivation_claims.c.expires_at < now) | (derivation_claims.c.owner == owner))
            .values(generation=generation, owner=owner, expires_at=until)
        )
        if taken.rowcount != 1:
            row = conn.execute(select(derivation_claims).where(*key)).first()
            held = None if row is None else Claim(row.image_id, row.variant, row.generation, row.owner)
            return ClaimOutcome.HELD, held
    # Only now, holding the claim: a holder that finished just before (its
    # row recorded and its claim ended in one transaction, which our insert
    # waited for) is visible to this statement, even under READ COMMITTED.
    done = conn.execute(
        select(derived.c.image_id).where(derived.c.image_id == image_id, derived.c.variant == variant)
    ).first()
    if done is not None:
        release_claim_txn(conn, image_id, variant, owner)
        return ClaimOutcome.DONE, None
    return ClaimOutcome.CLAIMED, None


def renew_claim_txn(conn: Connection, image_id: str, variant: str, owner: str, until: datetime) -> bool:
    """Extend owner's claim; False if it was lost (expired and taken over)."""
    result = conn.execute(
        update(derivation_claims)
        .where(
            derivation_claims.c.image_id == image_id,
            derivation_claims.c.variant == variant,
            derivation_claims.c.owner == owner,
        )
        .values(expires_at=until)
    )
    return result.rowcount == 1


def release_claim_txn(conn: Connection, image_id: str, variant: str, owner: str) -> None:
    conn.execute(
        delete(derivation_claims).where(
            derivation_claims.c.image_id == image_id,
            derivation_claims.c.variant == variant,
            derivation_claims.c.owner == owner,
        )
    )


def claims_txn(conn: Connection) -> list[Claim]:
    """Every derivation claim: the caller tells the dead from the living."""
    rows = conn.execute(select(derivation_claims)).all()
    return [Claim(row.image_id, row.variant, row.generation, row.owner) for row in rows]


def settle_claim_txn(conn: Connection, claim: Claim, blob_key: str) -> bool:
    """Forget a dead owner's claim; True if the file it may have stored at
    blob_key belongs to no row and should be removed."""
    ended = conn.execute(
        delete(derivation_claims).where(
            derivation_claims.c.image_id == claim.image_id,
            derivation_claims.c.variant == claim.variant,
            derivation_claims.c.owner == claim.owner,
        )
    )
    if ended.rowcount != 1:
        return False  # someone else settled it, or took it over
    recorded = conn.execute(select(derived.c.image_id).where(derived.c.blob_key == blob_key)).first()
    return recorded is None


@dataclass(frozen=True)
class StoreIndex:
    """What the metadata says should be in storage, for consistency checks."""

    ready_originals: dict[str, str]  # blob key -> image ID
    unfinished_originals: dict[str, str]  # blob key -> image ID, pending or deleting
    derived: dict[str, str]  # blob key -> image ID
    claimed: dict[str, Claim]  # blob key a claimed derivation will write -> claim

    def references(self, key: str) -> bool:
        return any(key in keys for keys in (self.ready_originals, self.unfinished_originals, self.derived))


def store_index_txn(conn: Connection, claim_key: Callable[[Claim], str]) -> StoreIndex:
    ready: dict[str, str] = {}
    unfinished: dict[str, str] = {}
    for row in conn.execute(select(originals.c.image_id, originals.c.status, originals.c.blob_key)):
        (ready if row.status == OriginalStatus.READY.value else unfinished)[row.blob_key] = row.image_id
    rendered = {
        row.blob_key: row.image_id for row in conn.execute(select(derived.c.image_id, derived.c.blob_key))
    }
    claims = [
        Claim(row.image_id, row.variant, row.generation, row.owner)
        for row in conn.execute(select(derivation_claims))
    ]
    return StoreIndex(ready, unfinished, rendered, {claim_key(claim): claim for claim in claims})


def forget_derived_key_txn(conn: Connection, blob_key: str) -> None:
    conn.execute(delete(derived).where(derived.c.blob_key == blob_key))
