"""
The admin tools' own transactions (pymager-admin stats, prune, warm --all),
as plain synchronous functions like the service's, and AdminQueries, the
small port that runs them on a Database.  The service never uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, func, select, update
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.schema import derivation_claims, derived, originals, removal_counter
from pymager_tx.core.model import OriginalStatus

# The working copy is a rendition no URL names (app.values.WorkingCopy).
WORKING_VARIANT = "working"


@dataclass(frozen=True)
class FormatTotal:
    format: str
    count: int
    bytes: int


@dataclass(frozen=True)
class Biggest:
    image_id: str
    variant: str | None  # None for an original
    byte_length: int
    created_at: datetime


@dataclass(frozen=True)
class TableStats:
    count: int
    bytes: int
    by_format: tuple[FormatTotal, ...]  # most bytes first
    largest: Biggest | None
    oldest: Biggest | None


@dataclass(frozen=True)
class StoreStats:
    originals: TableStats  # ready ones
    renditions: TableStats  # working copies included
    unfinished: int  # originals pending or being deleted
    claims: int  # derivations under way (or left by dead processes)


@dataclass(frozen=True)
class Rendition:
    image_id: str
    variant: str
    blob_key: str
    byte_length: int


class Forgotten(Enum):
    FORGOTTEN = "forgotten"  # the row is gone: its file may go
    CLAIMED = "claimed"  # a claim is deriving it again: left alone
    GONE = "gone"  # no row names that file any more


def stats_txn(conn: Connection) -> StoreStats:
    """Read with Database.read: one snapshot, aggregates only."""
    ready = originals.c.status == OriginalStatus.READY.value
    unfinished = conn.execute(select(func.count()).select_from(originals).where(~ready)).scalar_one()
    claims = conn.execute(select(func.count()).select_from(derivation_claims)).scalar_one()
    return StoreStats(
        _table_stats(conn, originals, ready),
        _table_stats(conn, derived, None),
        int(unfinished),
        int(claims),
    )


def _table_stats(conn: Connection, table: Table, where: ColumnElement[bool] | None) -> TableStats:
    conditions = [] if where is None else [where]
    totals = conn.execute(
        select(table.c.format, func.count(), func.coalesce(func.sum(table.c.byte_length), 0))
        .where(*conditions)
        .group_by(table.c.format)
    ).all()
    by_format = tuple(
        sorted(
            (FormatTotal(str(name), int(count), int(size)) for name, count, size in totals),
            key=lambda total: (-total.bytes, total.format),
        )
    )
    variant = table.c.variant if "variant" in table.c else None
    columns = [table.c.image_id, table.c.byte_length, table.c.created_at]
    if variant is not None:
        columns.append(variant)

    def first(*order: ColumnElement[Any]) -> Biggest | None:
        row = conn.execute(select(*columns).where(*conditions).order_by(*order).limit(1)).first()
        if row is None:
            return None
        return Biggest(row.image_id, getattr(row, "variant", None), int(row.byte_length), row.created_at)

    return TableStats(
        count=sum(total.count for total in by_format),
        bytes=sum(total.bytes for total in by_format),
        by_format=by_format,
        largest=first(table.c.byte_length.desc(), table.c.image_id),
        oldest=first(table.c.created_at, table.c.image_id),
    )


def ready_ids_txn(conn: Connection) -> list[str]:
    """The IDs of every ready original, in order."""
    statement = select(originals.c.image_id).where(originals.c.status == OriginalStatus.READY.value)
    return list(conn.execute(statement.order_by(originals.c.image_id)).scalars())


def renditions_txn(conn: Connection) -> list[Rendition]:
    """Every rendition a URL can name (working copies left out), in order."""
    statement = (
        select(derived.c.image_id, derived.c.variant, derived.c.blob_key, derived.c.byte_length)
        .where(derived.c.variant != WORKING_VARIANT)
        .order_by(derived.c.image_id, derived.c.variant)
    )
    return [
        Rendition(row.image_id, row.variant, row.blob_key, int(row.byte_length))
        for row in conn.execute(statement)
    ]


def forget_rendition_txn(conn: Connection, rendition: Rendition) -> Forgotten:
    """Delete the row of this very rendition (its file, blob_key), unless a
    claim holds its derivation (a live process deriving it anew, or one
    that died doing so, which recovery settles).  Counts as a removal, so
    that every process stops serving it from memory."""
    claimed = conn.execute(
        select(derivation_claims.c.owner).where(
            derivation_claims.c.image_id == rendition.image_id,
            derivation_claims.c.variant == rendition.variant,
        )
    ).first()
    if claimed is not None:
        return Forgotten.CLAIMED
    deleted = conn.execute(
        delete(derived).where(
            derived.c.image_id == rendition.image_id,
            derived.c.variant == rendition.variant,
            derived.c.blob_key == rendition.blob_key,
        )
    )
    if deleted.rowcount != 1:
        return Forgotten.GONE
    conn.execute(update(removal_counter).values(value=removal_counter.c.value + 1))
    return Forgotten.FORGOTTEN


class AdminQueries:
    """The admin tools' port on the metadata database: their named
    transactions, each run whole on the database's offload."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def stats(self) -> Deferred[StoreStats]:
        return self._database.read(stats_txn)

    def ready_ids(self) -> Deferred[list[str]]:
        return self._database.read(ready_ids_txn)

    def renditions(self) -> Deferred[list[Rendition]]:
        return self._database.read(renditions_txn)

    def forget_rendition(self, rendition: Rendition) -> Deferred[Forgotten]:
        return self._database.transact(forget_rendition_txn, rendition)
