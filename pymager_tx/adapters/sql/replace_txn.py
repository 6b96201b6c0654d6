"""
Whole transactions replacing an original (PUT with If-Match), as plain
synchronous functions (see originals_txn for the conventions).

A replacement claims the ID with a derivation claim of the variant
"replacement", which no URL names and whose key is the new upload's
original file (app.values.claimed_key): so, before the swap, recovery,
check and repair find that file through the claim, as they find a
derivation's.  The swap then moves the row to the new generation, forgets
the old renditions and re-points the claim at the old generation, in one
transaction: from then on the claim leads to the old files until they are
gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pymager_tx.adapters.sql.originals_txn import count_removal
from pymager_tx.adapters.sql.rows import database_now, original_of, row_of
from pymager_tx.adapters.sql.schema import derivation_claims, derived, originals
from pymager_tx.core.model import OriginalRecord, OriginalStatus
from pymager_tx.core.records import Claim, Removal, Swapped


def _ready_matching(image_id: str, etags: Sequence[str] | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        originals.c.image_id == image_id,
        originals.c.status == OriginalStatus.READY.value,
    ]
    if etags is not None:  # None: If-Match: *, any ready original
        conditions.append(originals.c.sha256.in_(list(etags)))
    return conditions


def claim_replacement_txn(
    conn: Connection, claim: Claim, etags: Sequence[str] | None, lease: timedelta
) -> tuple[bool, Claim | None]:
    """Claim the replacement of the ready original under claim.image_id by
    the upload of claim.generation, if it has one of etags (its SHA-256).
    Returns (True, claim) when claimed; (False, None) when the precondition
    fails; (False, holder) when another replacement holds the ID."""
    if (
        conn.execute(select(originals.c.image_id).where(*_ready_matching(claim.image_id, etags))).first()
        is None
    ):
        return False, None
    try:
        with conn.begin_nested():
            conn.execute(
                insert(derivation_claims).values(
                    image_id=claim.image_id,
                    variant=claim.variant,
                    generation=claim.generation,
                    owner=claim.owner,
                    token=claim.token,
                    expires_at=database_now(conn) + lease,
                )
            )
    except IntegrityError:
        row = conn.execute(
            select(derivation_claims).where(
                derivation_claims.c.image_id == claim.image_id, derivation_claims.c.variant == claim.variant
            )
        ).first()
        holder = (
            None if row is None else Claim(row.image_id, row.variant, row.generation, row.owner, row.token)
        )
        return False, holder
    return True, claim


def swap_original_txn(
    conn: Connection, record: OriginalRecord, etags: Sequence[str] | None, claim: Claim, now: datetime
) -> tuple[Swapped, Removal | None]:
    """Make record (its file stored under the claim) the original under its
    ID, if claim still holds and the row is a ready original with one of
    etags: the row takes the new generation, the old renditions' rows go,
    deletions are counted (every process's memory is voided), and the claim
    names the old generation, whose files the Removal lists."""
    held = conn.execute(
        select(derivation_claims.c.token)
        .where(
            derivation_claims.c.image_id == claim.image_id,
            derivation_claims.c.variant == claim.variant,
            derivation_claims.c.owner == claim.owner,
            derivation_claims.c.token == claim.token,
        )
        .with_for_update()
    ).first()
    if held is None:
        return Swapped.LOST, None
    # FOR UPDATE waits for a derivation recording its row (which holds the
    # row FOR SHARE) and makes later ones find the new generation.
    row = conn.execute(
        select(originals).where(*_ready_matching(record.image_id, etags)).with_for_update()
    ).first()
    if row is None:
        return Swapped.STALE, None
    old = original_of(row)
    conn.execute(
        update(originals)
        .where(originals.c.image_id == old.image_id, originals.c.generation == old.generation)
        .values(
            {
                **row_of(record, originals),
                "status": OriginalStatus.READY.value,
                "updated_at": now,
                "owner": None,
            }
        )
    )
    # An ID has one row, so every rendition row under it is the old upload's.
    keys = conn.execute(select(derived.c.blob_key).where(derived.c.image_id == old.image_id)).scalars().all()
    conn.execute(delete(derived).where(derived.c.image_id == old.image_id))
    conn.execute(
        update(derivation_claims)
        .where(
            derivation_claims.c.image_id == claim.image_id,
            derivation_claims.c.variant == claim.variant,
            derivation_claims.c.token == claim.token,
        )
        .values(generation=old.generation)
    )
    count_removal(conn, claim.owner)
    return Swapped.REPLACED, Removal(old, tuple(keys))
