"""
Rows and records: the mapping between the tables and the core's records, and
the database's clock.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, Row, Table, func, select

from pymager_tx.core.formats import format_named
from pymager_tx.core.model import DerivedRecord, OriginalRecord, OriginalStatus, StoredFile

R = TypeVar("R", bound=StoredFile)


# Built once: every derivation's claim asks.
_SQLITE_NOW = select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))
_NOW = select(func.now())


def database_now(conn: Connection) -> datetime:
    """The database's clock: leases are judged by one clock for every
    process, however far apart their own clocks are."""
    if conn.dialect.name == "sqlite":
        text = conn.execute(_SQLITE_NOW).scalar_one()
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    value: datetime = conn.execute(_NOW).scalar_one()
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def record_of(kind: type[R], row: Row[tuple[object, ...]]) -> R:
    values = dict(row._mapping)
    values["media_type"] = format_named(values["format"]).media_type
    if "status" in values:
        values["status"] = OriginalStatus(values["status"])
    names = {field.name for field in fields(kind)}
    return kind(**{name: value for name, value in values.items() if name in names})


def original_of(row: Row[tuple[object, ...]]) -> OriginalRecord:
    return record_of(OriginalRecord, row)


def derived_of(row: Row[tuple[object, ...]]) -> DerivedRecord:
    return record_of(DerivedRecord, row)


def row_of(record: StoredFile, table: Table) -> dict[str, object]:
    """The column values of record (media_type is derived from format, not stored)."""
    return {
        column.name: getattr(record, column.name) for column in table.columns if hasattr(record, column.name)
    }


def ping_txn(conn: Connection) -> None:
    conn.execute(select(1)).scalar_one()
