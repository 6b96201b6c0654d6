"""
Whole transactions on renditions and derivation claims, as plain
synchronous functions.

Each *_txn function takes a Connection already inside a transaction (see
Database.transact) and returns plain values.  Cancelling the Deferred of a
transaction does not stop it once its thread has started, so each write is
safe to run twice or to race with itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert

from pymager_tx.adapters.sql.originals_txn import find_original_txn
from pymager_tx.adapters.sql.rows import database_now, derived_of, row_of
from pymager_tx.adapters.sql.schema import derivation_claims, derived, originals
from pymager_tx.core.model import DerivedRecord, OriginalStatus
from pymager_tx.core.records import (
    Claim,
    ClaimOutcome,
    DerivedLookup,
    Recorded,
    StoreIndex,
)

# Built once: the lookup every request makes, and the statements of every
# derivation, cost no statement building.
_RENDITION = select(derived).where(
    derived.c.image_id == bindparam("image_id"), derived.c.variant == bindparam("variant")
)
_DONE = select(derived.c.image_id).where(
    derived.c.image_id == bindparam("image_id"), derived.c.variant == bindparam("variant")
)
# A claim, by its parameters (_held).
_HELD = (
    derivation_claims.c.image_id == bindparam("image_id"),
    derivation_claims.c.variant == bindparam("variant"),
    derivation_claims.c.owner == bindparam("owner"),
    derivation_claims.c.token == bindparam("token"),
)
_HELD_FOR_UPDATE = select(derivation_claims.c.token).where(*_HELD).with_for_update()
_END_CLAIM = delete(derivation_claims).where(*_HELD)
_INSERT_CLAIM = insert(derivation_claims)
# Where the dialect can say "insert unless the key exists" in one statement:
# a claim costs two statements fewer than a savepoint around the insert
# (a round trip each on a database across the network).  Whether it
# inserted is its row count, which psycopg 3 forgets once SQLAlchemy closes
# an INSERT's cursor unless told to keep it.  SQLite has the clause from
# 3.24 (2018).
_CLAIM_KEY = [derivation_claims.c.image_id, derivation_claims.c.variant]


def _insert_claim_unless_held(dialect_insert: Callable[[Any], Any]) -> Insert:
    statement: Insert = (
        dialect_insert(derivation_claims)
        .on_conflict_do_nothing(index_elements=_CLAIM_KEY)
        .execution_options(preserve_rowcount=True)
    )
    return statement


_INSERT_CLAIM_UNLESS_HELD: dict[str, Insert] = {"postgresql": _insert_claim_unless_held(postgresql.insert)}
if sqlite3.sqlite_version_info >= (3, 24):
    _INSERT_CLAIM_UNLESS_HELD["sqlite"] = _insert_claim_unless_held(sqlite.insert)
_INSERT_RENDITION = insert(derived)
_READY_FOCUS_FOR_SHARE = (
    select(originals.c.focus_version)
    .where(
        originals.c.image_id == bindparam("image_id"),
        originals.c.generation == bindparam("generation"),
        originals.c.status == OriginalStatus.READY.value,
    )
    .with_for_update(read=True)
)


def lookup_derived_txn(conn: Connection, image_id: str, variant: str) -> DerivedLookup:
    original = find_original_txn(conn, image_id)
    if original is None:
        return DerivedLookup(None, None)
    row = conn.execute(_RENDITION, {"image_id": image_id, "variant": variant}).first()
    return DerivedLookup(original, None if row is None else derived_of(row))


def record_derived_txn(conn: Connection, record: DerivedRecord, generation: str, claim: Claim) -> Recorded:
    """Record a derived image whose file (record.blob_key) is stored, if the
    holder still holds claim and its original (this generation of it) is
    still ready.  The claim ends with the record; otherwise it stays, so
    that the holder removes its file before it ends the claim (and if the
    holder dies first, recovery finds the file through the claim)."""
    # FOR UPDATE: a peer taking over the claim now waits for this
    # transaction, and then finds it gone.
    held = conn.execute(_HELD_FOR_UPDATE, _held(claim)).first()
    if held is None:
        return Recorded.LOST
    # FOR SHARE (PostgreSQL) holds off a concurrent begin_removal_txn until
    # this commits; SQLite serializes writers anyway and ignores it.
    current = conn.execute(
        _READY_FOCUS_FOR_SHARE, {"image_id": record.image_id, "generation": generation}
    ).first()
    if current is None:
        return Recorded.GONE
    if record.focus_version is not None and record.focus_version != current.focus_version:
        # Made for a focal point changed since (meta_txn.refocus_txn).
        return Recorded.STALE
    try:
        with conn.begin_nested():
            conn.execute(_INSERT_RENDITION, row_of(record, derived))
    except IntegrityError:
        # A holder whose claim lapsed recorded the same rendition first.
        return Recorded.ALREADY
    conn.execute(_END_CLAIM, _held(claim))
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
    if not _inserted_claim(conn, {"image_id": image_id, "variant": variant, **values}):
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
    done = conn.execute(_DONE, {"image_id": image_id, "variant": variant}).first()
    if done is not None:
        release_claim_txn(conn, ours)
        return ClaimOutcome.DONE, None
    return ClaimOutcome.CLAIMED, ours


def _inserted_claim(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert a claim row; False if one exists for its rendition.  Either
    way, a claim another transaction is inserting or ending is waited for,
    as the primary key makes any insert wait."""
    unless_held = _INSERT_CLAIM_UNLESS_HELD.get(conn.dialect.name)
    if unless_held is not None:
        return conn.execute(unless_held, values).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(_INSERT_CLAIM, values)
    except IntegrityError:
        return False
    return True


def renew_claim_txn(conn: Connection, claim: Claim, lease: timedelta) -> bool:
    """Extend claim by lease from now (the database's clock); False if it
    was lost (expired and taken over)."""
    result = conn.execute(
        update(derivation_claims).where(*_holding(claim)).values(expires_at=database_now(conn) + lease)
    )
    return result.rowcount == 1


def release_claim_txn(conn: Connection, claim: Claim) -> None:
    """End claim, if it is still this very claim (its token)."""
    conn.execute(_END_CLAIM, _held(claim))


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


def _held(claim: Claim) -> dict[str, str]:
    """The parameters of _HELD for claim."""
    return {"image_id": claim.image_id, "variant": claim.variant, "owner": claim.owner, "token": claim.token}


def _claim(row: Row[tuple[object, ...]]) -> Claim:
    return Claim(row.image_id, row.variant, row.generation, row.owner, row.token)


def store_index_txn(conn: Connection, claim_key: Callable[[Claim], str], below: str = "") -> StoreIndex:
    """Read with Database.read, whose transactions see one snapshot of the
    database (PostgreSQL's REPEATABLE READ; SQLite's read transactions):
    work that finishes between these statements (a derived row recorded
    and its claim ended) is seen either wholly before or wholly after.
    below: only the keys that start with it (a shard of the store, read
    through the blob key's index), or every key."""
    ready: dict[str, tuple[str, str]] = {}
    unfinished: dict[str, str] = {}
    for row in conn.execute(
        _below(
            select(originals.c.image_id, originals.c.generation, originals.c.status, originals.c.blob_key),
            originals.c.blob_key,
            below,
        )
    ):
        if row.status == OriginalStatus.READY.value:
            ready[row.blob_key] = (row.image_id, row.generation)
        else:
            unfinished[row.blob_key] = row.image_id
    rendered = {
        row.blob_key: row.image_id
        for row in conn.execute(
            _below(select(derived.c.image_id, derived.c.blob_key), derived.c.blob_key, below)
        )
    }
    claims = [_claim(row) for row in conn.execute(select(derivation_claims))]  # few: those under way
    keyed = ((claim_key(claim), claim) for claim in claims)
    return StoreIndex(
        ready, unfinished, rendered, {key: claim for key, claim in keyed if key.startswith(below)}
    )


def count_images_txn(conn: Connection) -> int:
    count = select(func.count()).select_from
    return int(conn.execute(count(originals)).scalar_one()) + int(conn.execute(count(derived)).scalar_one())


def _below(query: Select[Any], column: ColumnElement[str], prefix: str) -> Select[Any]:
    """query, for the keys that start with prefix: a range of the index
    (prefix ends in "/", whose successor is "0")."""
    if not prefix:
        return query
    return query.where(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def forget_derived_key_txn(conn: Connection, blob_key: str) -> None:
    conn.execute(delete(derived).where(derived.c.blob_key == blob_key))
