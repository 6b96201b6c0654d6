"""
Which revision a database's schema is at, and what may be done about it.

Each function here is a transaction body (work(connection)) for
Database.transact: synchronous SQLAlchemy and Alembic work on the database
pool, in one transaction, serialized against other processes doing the same.

Start-up creates the schema of an empty database and accepts a current one;
it refuses any other, because upgrading is an operator's decision
(`pymager-admin db upgrade`), taken once, not by whichever process starts
first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from twisted.logger import Logger

from pymager_tx.adapters.sql.migrations import alembic_config, script_directory
from pymager_tx.adapters.sql.schema import metadata

if TYPE_CHECKING:
    from pymager_tx.adapters.sql.database import Database

UPGRADE_COMMAND = "pymager-admin db upgrade"
# What the first release made: its tables, and no alembic_version.
FIRST_RELEASE = "0001"
_VERSION_TABLE = "alembic_version"
# Any fixed number: every pymager-tx process takes the same lock.
LOCK_KEY = 0x706D6167  # "pmag"


log = Logger()


class SchemaError(Exception):
    """The database's schema is not one this pymager-tx can run on as it is."""


class State(enum.Enum):
    EMPTY = "empty"
    CURRENT = "current"
    OUTDATED = "outdated"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SchemaStatus:
    state: State
    # The revision the database is at; FIRST_RELEASE for a database the first
    # release made, None when empty.
    revision: str | None
    head: str

    def describe(self) -> str:
        if self.state is State.EMPTY:
            return f"empty (this pymager-tx creates revision {self.head})"
        if self.state is State.CURRENT:
            return f"at revision {self.revision}, current"
        if self.state is State.OUTDATED:
            return f"at revision {self.revision}, older than this pymager-tx ({self.head})"
        return f"at revision {self.revision}, unknown to this pymager-tx (newest known: {self.head})"


async def prepare_at_startup(database: Database) -> None:
    """Start-up's schema step, on the database pool: create the schema of an
    empty database, accept a current one, raise SchemaError for any other."""
    found = await database.transact(startup_txn)
    if found.state is State.EMPTY:
        log.info("Database schema created at revision {revision}", revision=found.head)
    else:
        log.info("Database schema at revision {revision}", revision=found.revision)


def status_txn(connection: Connection) -> SchemaStatus:
    """Where the database's schema stands, without changing it."""
    _serialize(connection)
    return _status(connection, script_directory())


def startup_txn(connection: Connection) -> SchemaStatus:
    """Create the schema of an empty database; refuse one that is not current.

    Returns the status found before any change.
    """
    _serialize(connection)
    script = script_directory()
    found = _status(connection, script)
    if found.state is State.EMPTY:
        _create(connection)
    elif found.state is State.OUTDATED:
        raise SchemaError(
            f"The database schema is at revision {found.revision}, older than this pymager-tx "
            f"(revision {found.head}). Back up the database, then run `{UPGRADE_COMMAND}` "
            "with this server's --config."
        )
    elif found.state is State.UNKNOWN:
        raise _too_new(found)
    return found


def upgrade_txn(connection: Connection) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the schema to the current revision from any revision this
    pymager-tx knows, empty included.  Returns the status before and after."""
    _serialize(connection)
    script = script_directory()
    before = _status(connection, script)
    if before.state is State.UNKNOWN:
        raise _too_new(before)
    if before.state is State.EMPTY:
        _create(connection)
    elif before.state is State.OUTDATED:
        config = alembic_config(connection)
        if not _has_version_table(connection):
            command.stamp(config, FIRST_RELEASE)
        command.upgrade(config, "head")
    return before, _status(connection, script)


def drop_txn(connection: Connection) -> None:
    """Drop every table of the schema, and its revision."""
    _serialize(connection)
    metadata.drop_all(connection)
    connection.execute(text(f"DROP TABLE IF EXISTS {_VERSION_TABLE}"))


def _create(connection: Connection) -> None:
    # A version row left behind with no table of ours (someone dropped the
    # tables only) would make Alembic believe the tables exist: forget it.
    connection.execute(text(f"DROP TABLE IF EXISTS {_VERSION_TABLE}"))
    command.upgrade(alembic_config(connection), "head")


def _status(connection: Connection, script: ScriptDirectory) -> SchemaStatus:
    head = script.get_current_head()
    assert head is not None, "the migrations have one head"
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is not None and not _known(script, revision):
        return SchemaStatus(State.UNKNOWN, revision, head)
    if not set(metadata.tables) & set(inspect(connection).get_table_names()):
        return SchemaStatus(State.EMPTY, None, head)
    if revision is None:
        revision = FIRST_RELEASE
    return SchemaStatus(State.CURRENT if revision == head else State.OUTDATED, revision, head)


def _known(script: ScriptDirectory, revision: str) -> bool:
    # Exact ids: get_revision would also accept a prefix of one.
    return revision in {script_revision.revision for script_revision in script.walk_revisions()}


def _has_version_table(connection: Connection) -> bool:
    return inspect(connection).has_table(_VERSION_TABLE)


def _serialize(connection: Connection) -> None:
    # Several processes may start at once on one database: one creates the
    # schema, the others wait, then find it current.  PostgreSQL needs a lock
    # (held to the end of the transaction); SQLite's write transactions
    # (BEGIN IMMEDIATE) already exclude each other.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


def _too_new(found: SchemaStatus) -> SchemaError:
    return SchemaError(
        f"The database schema is at revision {found.revision}, which this pymager-tx does not know "
        f"(its newest is {found.head}): this pymager-tx is older than the database. "
        "Run the pymager-tx that upgraded it, or a newer one."
    )
