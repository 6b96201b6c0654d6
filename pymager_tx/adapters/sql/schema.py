"""Tables, declared once with SQLAlchemy Core; portable SQL only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database
    (SQLite keeps no time zone; PostgreSQL does)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _file_columns() -> list[Column[object]]:
    """What both tables record of a stored image file."""
    return [
        Column("format", String(16), nullable=False),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("byte_length", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("blob_key", String(255), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
    ]


originals = Table(
    "originals",
    metadata,
    Column("image_id", String(128), primary_key=True),
    Column("generation", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    *_file_columns(),
    Column("updated_at", UTCDateTime, nullable=False),
    # The process carrying out a pending upload or a deletion, so that
    # recovery and repair in another process finish only what processes
    # that are gone left, never what a live one is doing.
    Column("owner", String(64), nullable=True),
    # The focal point (relative to the displayed picture, 0..1), and a
    # version that every change of it increments: renditions it moves are
    # recorded with the version they were made for (revision 0006).
    Column("focal_x", Float, nullable=True),
    Column("focal_y", Float, nullable=True),
    Column("focus_version", Integer, nullable=False, server_default="0"),
    # Computed at upload; null for originals stored before revision 0006
    # until GET /meta computes them.
    Column("blurhash", String(100), nullable=True),
    Column("dominant_color", String(7), nullable=True),
    CheckConstraint("status IN ('pending', 'ready', 'deleting')", name="status"),
    # Start-up recovery looks for the few rows that are not ready.
    Index(None, "status"),
    # `check` reads the rows of one range of keys at a time (revision 0007).
    Index(None, "blob_key"),
)

derived = Table(
    "derived",
    metadata,
    Column(
        "image_id",
        String(128),
        ForeignKey("originals.image_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("variant", String(64), primary_key=True),
    *_file_columns(),
    # The original's focus_version this rendition was made for; null for
    # renditions the focal point does not move (fit, pad, the working copy).
    Column("focus_version", Integer, nullable=True),
    Index(None, "blob_key"),
)

# One row per derivation under way, so that of many processes asked for the
# same rendition at once, one derives and the others wait for its row in
# `derived`.  A claim expires (by the database's clock): a process that dies
# or stalls mid-derivation holds it only until expires_at, then another takes
# it over.  Every claim has a new token, which names the one file its holder
# may write, so no two holders ever write the same file, and which the holder
# must still hold to record its result.  No foreign key: a claim outlives a
# deletion of its original, so that recovery can still find and remove a
# file its dead owner stored but never recorded.
derivation_claims = Table(
    "derivation_claims",
    metadata,
    Column("image_id", String(128), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("generation", String(32), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # Empty for the claims of releases before tokens (revision 0004).
    Column("token", String(32), nullable=False, server_default=""),
)

# One row, whose value every deletion increments: processes serving derived
# images from memory ask for it once in a while, one small query for them
# all, to learn of deletions made by processes on other machines.
removal_counter = Table(
    "removal_counter",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# One row per live process, when liveness is judged by the database (no
# shared data directory to hold flock locks in): each process renews its
# lease (expires_at, by the database's clock) every few seconds, and a row
# whose lease ran out is a dead process, whatever its name says.  name is
# the owner name the process writes into the rows it holds.
processes = Table(
    "processes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
