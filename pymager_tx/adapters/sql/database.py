"""
SQLAlchemy 2 on Twisted, the adbapi way.

The thread boundary is a whole transaction: a plain synchronous function
work(conn, ...) runs on the database pool inside BEGIN ... COMMIT (ROLLBACK
if it raises), and its return value comes back in a Deferred.  Functions bring
back values, never Results or connections.  This keeps alchimia's idea
(SQLAlchemy results as Deferreds) with one thread hop per transaction
instead of one per call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.schema_version import drop_txn, upgrade_txn
from pymager_tx.core.errors import DatabaseUnavailable
from pymager_tx.ports import Offload

T = TypeVar("T")
P = ParamSpec("P")
_WRITE = "pymager_write"
# Seconds to wait for a connection to a server that does not answer: a
# request should fail fast with 503, not hang with its client.
_CONNECT_TIMEOUT = 5
# Failures of the database itself, not of what a transaction asked of it.
_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


def sqlite_url(path: Path) -> str:
    return URL.create("sqlite+pysqlite", database=str(path.absolute())).render_as_string()


def _parse(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we support; SQLAlchemy's default is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database cannot be shared by threads; name a file")
    return parsed


def check_database_url(url: str) -> None:
    """Raise ValueError unless url names a database whose driver is installed
    (without connecting to it)."""
    try:
        _parse(url).get_dialect().import_dbapi()
    except ValueError:
        raise
    except Exception as error:  # ArgumentError, NoSuchModuleError, a missing driver
        raise ValueError(f"not a usable SQLAlchemy URL ({error})") from None


def make_engine(url: str, pool_size: int) -> Engine:
    """An engine whose connection pool matches the database thread pool."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=0,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    # pre_ping: a server restarted under us costs one reconnect, not an error.
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=_CONNECT_TIMEOUT,
        connect_args={"connect_timeout": _CONNECT_TIMEOUT},
    )


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling starts transactions late and never
    # for SELECTs; take it over so BEGIN means what it says (SQLAlchemy's
    # documented recipe), and so writers take the lock up front instead of
    # failing with "database is locked" when a read turns into a write.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    def __init__(self, engine: Engine, offload: Offload) -> None:
        self.engine = engine
        self._offload = offload

    def transact(
        self, work: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run work(conn, *args, **kwargs) as one read-write transaction.
        The transaction's name, for the log, is work's name."""
        return self._offload(self._run, True, work, args, kwargs)

    def read(
        self, work: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run work(conn, *args, **kwargs) as one transaction that only reads,
        and sees one snapshot of the database however many statements it
        runs (SQLite's read transactions do; PostgreSQL's READ COMMITTED
        would show each statement another state, so reads run REPEATABLE
        READ there, which costs a read-only transaction nothing)."""
        return self._offload(self._run, False, work, args, kwargs)

    def _run(self, write: bool, work: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{_WRITE: write})
                if not write and self.engine.dialect.name != "sqlite":
                    connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    return work(connection, *args, **kwargs)
        except _UNAVAILABLE as error:
            # The pool drops a broken connection and pre_ping replaces it on
            # the next checkout, so service resumes once the server is back.
            raise DatabaseUnavailable(
                "the metadata database is unavailable; try again later",
                f"{getattr(work, '__name__', 'a transaction')}: {_first_line(error)}",
            ) from error

    def create_schema(self) -> Deferred[None]:
        """Bring the schema to the current revision through the migrations
        (from empty or any older revision)."""
        return self.transact(upgrade_txn).addCallback(lambda _statuses: None)

    def drop_schema(self) -> Deferred[None]:
        """Drop every table, the migrations' revision included."""
        return self.transact(drop_txn)

    def dispose(self) -> Deferred[None]:
        return self._offload(self.engine.dispose)


def _first_line(error: Exception) -> str:
    """The driver's own message, without SQLAlchemy's SQL echo and links."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0][:200] if text else type(original).__name__
