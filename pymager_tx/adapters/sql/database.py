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
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from pymager_tx.adapters.sql.lease import Lease
from pymager_tx.adapters.sql.listing_txn import list_originals_txn
from pymager_tx.adapters.sql.meta_txn import original_meta_txn, refocus_txn, store_summary_txn
from pymager_tx.adapters.sql.originals_txn import (
    abandon_upload_txn,
    begin_removal_txn,
    claim_original_txn,
    find_original_txn,
    forget_lost_original_txn,
    forget_original_txn,
    mark_original_ready_txn,
    removal_count_txn,
    resume_removal_txn,
    row_state_txn,
    unfinished_txn,
)
from pymager_tx.adapters.sql.processes_txn import LeaseLapsed, within_lease_txn
from pymager_tx.adapters.sql.renditions_txn import (
    claim_derivation_txn,
    claims_txn,
    count_images_txn,
    forget_derived_key_txn,
    forget_derived_txn,
    lookup_derived_txn,
    names_blob_txn,
    record_derived_txn,
    release_claim_txn,
    renew_claim_txn,
    store_index_txn,
    take_over_claim_txn,
)
from pymager_tx.adapters.sql.replace_txn import claim_replacement_txn, swap_original_txn
from pymager_tx.adapters.sql.rows import ping_txn
from pymager_tx.adapters.sql.schema_version import drop_txn, upgrade_txn
from pymager_tx.core.errors import DatabaseUnavailable
from pymager_tx.core.model import DerivedRecord, FocalPoint, OriginalRecord
from pymager_tx.core.records import (
    Claim,
    ClaimOutcome,
    DerivedLookup,
    OriginalMeta,
    Recorded,
    Refocused,
    Removal,
    RowState,
    StoreIndex,
    Swapped,
)
from pymager_tx.ports import NO_METRICS, IMetadataStore, Metrics, Offload

T = TypeVar("T")
P = ParamSpec("P")
_WRITE = "pymager_write"
# A write whose loss in a power failure costs nothing acknowledged (a
# derivation's claim: see Database.transact_lapsable).
_LAPSABLE = "pymager_lapsable"
# How a transaction runs: reads only; writes committed to disk; writes that may lapse.
_READ, _DURABLE, _LAPSABLE_WRITE = "read", "durable", "lapsable"
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
        options = connection.get_execution_options()
        write = options.get(_WRITE, True)
        if write:
            # WAL: NORMAL writes the commit to the log without an fsync; the
            # next FULL commit (or checkpoint) syncs the log up to itself, so
            # commits still reach the disk in order.  Set per connection,
            # outside a transaction, only when it changes.
            synchronous = "NORMAL" if options.get(_LAPSABLE, False) else "FULL"
            if connection.info.get(_LAPSABLE) != synchronous:
                connection.exec_driver_sql(f"PRAGMA synchronous = {synchronous}")
                connection.info[_LAPSABLE] = synchronous
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@implementer(IMetadataStore)
class Database:
    def __init__(
        self, engine: Engine, offload: Offload, lease: Lease | None = None, metrics: Metrics = NO_METRICS
    ) -> None:
        """lease: this process's lease, when liveness is judged by the
        database (pymager_tx.adapters.sql.heartbeat): then new claims need
        it to hold by the database's clock, and health needs it to hold by
        this process's own renewals."""
        self.engine = engine
        self._offload = offload
        self.lease = lease
        # Each transaction's time and failures, by its name (work's, less "_txn").
        self._metrics = metrics
        # When a transaction last committed, and last failed for want of the
        # database (time.monotonic(); written from the pool's threads).
        self._answered_at: float | None = None
        self._failed_at: float | None = None

    def transact(
        self, work: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run work(conn, *args, **kwargs) as one read-write transaction.
        The transaction's name, for the log, is work's name."""
        return self._offload(self._run, _DURABLE, work, args, kwargs)

    def transact_lapsable(
        self, work: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """As transact, but the commit does not wait for the disk (SQLite:
        synchronous NORMAL; PostgreSQL: synchronous_commit off): a process
        that crashes loses nothing, a power failure may lose it and the
        commits after it, never one before.  For writes whose loss costs
        nothing acknowledged: claims on derivations and the records of
        renditions, which are derived again if lost (the next durable
        commit syncs them along)."""
        return self._offload(self._run, _LAPSABLE_WRITE, work, args, kwargs)

    def read(
        self, work: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run work(conn, *args, **kwargs) as one transaction that only reads,
        and sees one snapshot of the database however many statements it
        runs (SQLite's read transactions do; PostgreSQL's READ COMMITTED
        would show each statement another state, so reads run REPEATABLE
        READ there, which costs a read-only transaction nothing)."""
        return self._offload(self._run, _READ, work, args, kwargs)

    def _run(self, mode: str, work: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._metrics is NO_METRICS:
            return self._transaction(mode, work, args, kwargs)
        # A claim within this process's lease is named for the claim.
        named = args[1] if work is within_lease_txn else work
        name = getattr(named, "__name__", "transaction").removesuffix("_txn")
        started = time.perf_counter()
        try:
            result = self._transaction(mode, work, args, kwargs)
        except BaseException:
            self._metrics.db_transaction(name, time.perf_counter() - started, True)
            raise
        self._metrics.db_transaction(name, time.perf_counter() - started, False)
        return result

    def _transaction(
        self, mode: str, work: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        write, lapsable = mode != _READ, mode == _LAPSABLE_WRITE
        sqlite = self.engine.dialect.name == "sqlite"
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{_WRITE: write, _LAPSABLE: lapsable})
                if not write and not sqlite:
                    connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    if lapsable and not sqlite:
                        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    result = work(connection, *args, **kwargs)
            self._answered_at = time.monotonic()
            return result
        except _UNAVAILABLE as error:
            self._failed_at = time.monotonic()
            # The pool drops a broken connection and pre_ping replaces it on
            # the next checkout, so service resumes once the server is back.
            raise DatabaseUnavailable(
                "the metadata database is unavailable; try again later",
                f"{getattr(work, '__name__', 'a transaction')}: {_first_line(error)}",
            ) from error

    # The metadata store (ports.IMetadataStore): one transaction each.

    def ping(self) -> Deferred[None]:
        lapsed = None if self.lease is None else self.lease.lapsed()
        if lapsed is not None:
            return fail(LeaseLapsed("this process is out of touch with its peers; try again later", lapsed))
        return self.read(ping_txn)

    def answered_within(self, seconds: float) -> bool:
        if self.lease is not None and self.lease.lapsed() is not None:
            return False  # ping() says why
        last, failed = self._answered_at, self._failed_at
        if last is None or (failed is not None and failed > last):
            return False
        return time.monotonic() - last <= seconds

    def find_original(self, image_id: str) -> Deferred[OriginalRecord | None]:
        return self.read(find_original_txn, image_id)

    def row_state(self, image_id: str) -> Deferred[RowState | None]:
        return self.read(row_state_txn, image_id)

    def claim_original(self, record: OriginalRecord, owner: str) -> Deferred[None]:
        if self.lease is not None:
            return self.transact(within_lease_txn, owner, claim_original_txn, record, owner)
        return self.transact(claim_original_txn, record, owner)

    def mark_original_ready(self, image_id: str, generation: str, now: datetime) -> Deferred[bool]:
        return self.transact(mark_original_ready_txn, image_id, generation, now)

    def begin_removal(
        self, image_id: str, now: datetime, owner: str | None = None
    ) -> Deferred[Removal | None]:
        return self.transact(begin_removal_txn, image_id, now, owner)

    def resume_removal(self, image_id: str, generation: str) -> Deferred[Removal | None]:
        return self.read(resume_removal_txn, image_id, generation)

    def forget_lost_original(
        self, image_id: str, generation: str, now: datetime, owner: str | None = None
    ) -> Deferred[Removal | None]:
        return self.transact(forget_lost_original_txn, image_id, generation, now, owner)

    def abandon_upload(
        self, image_id: str, generation: str, now: datetime, owner: str | None = None
    ) -> Deferred[Removal | None]:
        return self.transact(abandon_upload_txn, image_id, generation, now, owner)

    def forget_original(self, image_id: str, generation: str) -> Deferred[None]:
        return self.transact(forget_original_txn, image_id, generation)

    def unfinished(self) -> Deferred[list[RowState]]:
        return self.read(unfinished_txn)

    def removal_count(self) -> Deferred[int]:
        return self.read(removal_count_txn)

    def lookup_derived(self, image_id: str, variant: str) -> Deferred[DerivedLookup]:
        return self.read(lookup_derived_txn, image_id, variant)

    def record_derived(self, record: DerivedRecord, generation: str, claim: Claim) -> Deferred[Recorded]:
        # Lapsable, as the rendition's file name is (adapters.storage): a
        # rendition lost to a power failure is derived again when asked for,
        # and its file, if its name outlived the row, lies under its claim's
        # key, which recovery removes with the claim, or `check --repair`
        # as an orphan.  Waiting for the disk here held SQLite's write lock
        # through an fsync that the next derivation's claim queued behind.
        return self.transact_lapsable(record_derived_txn, record, generation, claim)

    def forget_derived(self, record: DerivedRecord) -> Deferred[None]:
        return self.transact(forget_derived_txn, record)

    def forget_derived_key(self, blob_key: str) -> Deferred[None]:
        return self.transact(forget_derived_key_txn, blob_key)

    def claim_derivation(
        self, image_id: str, variant: str, generation: str, owner: str, token: str, lease: timedelta
    ) -> Deferred[tuple[ClaimOutcome, Claim | None]]:
        # A claim lost to a power failure leaves nothing to undo but a file
        # stored under its token, which `check --repair` finds as an orphan.
        if self.lease is not None:
            return self.transact_lapsable(
                within_lease_txn,
                owner,
                claim_derivation_txn,
                image_id,
                variant,
                generation,
                owner,
                token,
                lease,
            )
        return self.transact_lapsable(
            claim_derivation_txn, image_id, variant, generation, owner, token, lease
        )

    def renew_claim(self, claim: Claim, lease: timedelta) -> Deferred[bool]:
        return self.transact_lapsable(renew_claim_txn, claim, lease)

    def release_claim(self, claim: Claim) -> Deferred[None]:
        return self.transact(release_claim_txn, claim)

    def claims(self) -> Deferred[list[Claim]]:
        return self.read(claims_txn)

    def take_over_claim(self, claim: Claim, owner: str, lease: timedelta) -> Deferred[bool]:
        return self.transact(take_over_claim_txn, claim, owner, lease)

    def names_blob(self, blob_key: str) -> Deferred[bool]:
        return self.read(names_blob_txn, blob_key)

    def store_index(self, claim_key: Callable[[Claim], str], below: str = "") -> Deferred[StoreIndex]:
        return self.read(store_index_txn, claim_key, below)

    def count_images(self) -> Deferred[int]:
        return self.read(count_images_txn)

    def claim_replacement(
        self, claim: Claim, etags: Sequence[str] | None, lease: timedelta
    ) -> Deferred[tuple[bool, Claim | None]]:
        if self.lease is not None:
            return self.transact(within_lease_txn, claim.owner, claim_replacement_txn, claim, etags, lease)
        return self.transact(claim_replacement_txn, claim, etags, lease)

    def swap_original(
        self, record: OriginalRecord, etags: Sequence[str] | None, claim: Claim, now: datetime
    ) -> Deferred[tuple[Swapped, Removal | None]]:
        return self.transact(swap_original_txn, record, etags, claim, now)

    def list_originals(self, after: str | None, limit: int) -> Deferred[list[OriginalRecord]]:
        return self.read(list_originals_txn, after, limit)

    def original_meta(self, image_id: str) -> Deferred[OriginalMeta | None]:
        return self.read(original_meta_txn, image_id)

    def refocus(
        self, image_id: str, focal_point: FocalPoint | None, now: datetime, owner: str | None = None
    ) -> Deferred[Refocused | None]:
        return self.transact(refocus_txn, image_id, focal_point, now, owner)

    def store_summary(
        self, image_id: str, generation: str, blurhash: str, dominant_color: str
    ) -> Deferred[bool]:
        return self.transact(store_summary_txn, image_id, generation, blurhash, dominant_color)

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
