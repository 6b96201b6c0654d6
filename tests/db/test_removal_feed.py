"""The removal signal across machines: a deletion begun through one Database
is heard by another process's listener (PostgreSQL LISTEN/NOTIFY) as it
commits; on SQLite there is no feed, and the removal counter alone tells.

The listener runs in its own thread and hands what it hears to the reactor;
each test waits for that with a bounded timeout, never a sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import Connection
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.database import Database, make_engine
from pymager_tx.adapters.sql.originals_txn import (
    begin_removal_txn,
    claim_original_txn,
    mark_original_ready_txn,
    removal_count_txn,
)
from pymager_tx.adapters.sql.removal_feed import RemovalListener
from pymager_tx.config import load_settings
from pymager_tx.ports import NoRemovalFeed, immediate
from pymager_tx.process.wiring import Offloads, build_store
from tests.db.test_repository import pending
from tests.results import result_of

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Generous: a notification arrives in milliseconds.
TIMEOUT = 10.0


class Heard:
    """What a listener heard, as Deferreds to wait on one at a time."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: list[Deferred[int]] = []

    def __call__(self) -> None:
        self.count += 1
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(self.count)

    def next(self) -> Deferred[int]:
        waiter: Deferred[int] = Deferred()
        self._waiting.append(waiter)
        return waiter.addTimeout(TIMEOUT, reactor)


def ready(database: Database, image_id: str) -> None:
    record = pending(image_id)
    result_of(database.transact(claim_original_txn, record, "uploader"))
    result_of(database.transact(mark_original_ready_txn, image_id, record.generation, NOW))


@pytest.fixture
def postgres(postgres_server_url: str) -> Iterator[Database]:
    """The deleting process's database: a fresh schema on PostgreSQL."""
    database = Database(make_engine(postgres_server_url, pool_size=2), immediate)
    result_of(database.drop_schema())
    result_of(database.create_schema())
    yield database
    result_of(database.drop_schema())
    database.engine.dispose()


@pytest_twisted.async_yield_fixture
async def listening(postgres_server_url: str) -> AsyncIterator[Heard]:
    """Another process's listener, on an engine of its own, once it listens."""
    engine = make_engine(postgres_server_url, pool_size=1)
    heard = Heard()
    listener = RemovalListener(engine, "listener", reactor.callFromThread, wait=0.1)
    first = heard.next()
    listener.start(heard)
    # Listening begins with one call: deletions may have been missed before.
    assert await first == 1
    yield heard
    await listener.stop().addTimeout(TIMEOUT, reactor)
    engine.dispose()


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_a_deletion_is_heard_by_another_process_as_it_commits(
    postgres: Database, listening: Heard
) -> None:
    ready(postgres, "photo")
    hearing = listening.next()

    assert result_of(postgres.transact(begin_removal_txn, "photo", NOW, "deleter")) is not None

    assert await hearing == 2


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_only_committed_deletions_of_other_processes_are_heard(
    postgres: Database, listening: Heard
) -> None:
    for image_id in ("mine", "undone", "theirs"):
        ready(postgres, image_id)

    def rolled_back(conn: Connection) -> None:
        assert begin_removal_txn(conn, "undone", NOW, "deleter") is not None
        raise RuntimeError("rolled back")

    # The listener's own deletion: it voided its memory itself.
    result_of(postgres.transact(begin_removal_txn, "mine", NOW, "listener"))
    postgres.transact(rolled_back).addErrback(lambda failure: failure.trap(RuntimeError))
    hearing = listening.next()
    result_of(postgres.transact(begin_removal_txn, "theirs", NOW, "deleter"))

    # Notifications arrive in commit order: had either of the first two been
    # heard, it would have been before this one.
    assert await hearing == 2
    assert result_of(postgres.read(removal_count_txn)) == 2


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_a_listener_that_cannot_connect_keeps_trying_and_stops(postgres_server_url: str) -> None:
    engine = make_engine(postgres_server_url.replace(":5432/", ":1/"), pool_size=1)
    heard = Heard()
    listener = RemovalListener(engine, "listener", reactor.callFromThread, wait=0.1, retry=0.05)
    listener.start(heard)
    await listener.stop().addTimeout(TIMEOUT, reactor)
    assert heard.count == 0
    engine.dispose()


def test_sqlite_has_no_feed_and_the_counter_tells(tmp_path: Path) -> None:
    settings = load_settings(None, {"storage": {"data_directory": str(tmp_path)}})
    store = build_store(settings, Offloads.at_once(), timer=reactor)
    assert isinstance(store.removal_feed, NoRemovalFeed)
    database = store.database
    try:
        result_of(database.create_schema())
        ready(database, "photo")
        result_of(database.transact(begin_removal_txn, "photo", NOW, "deleter"))
        assert result_of(database.read(removal_count_txn)) == 1
    finally:
        database.engine.dispose()
