"""The real service at start-up: it creates the schema of an empty database,
and refuses one at another revision before it listens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from twisted.internet import reactor
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from pymager_tx.adapters.sql.database import make_engine, sqlite_url
from pymager_tx.adapters.sql.schema_version import SchemaError, drop_txn, upgrade_txn
from pymager_tx.config import load_settings
from pymager_tx.process.server import PymagerService
from tests.db.release_1 import create_release_1, insert_release_1_rows
from tests.integration.conftest import start, stop

HEAD = "0007"


class Store:
    """The database a service under test will use, worked on directly."""

    def __init__(self, data_directory: Path, database_url: str) -> None:
        self.data_directory = data_directory
        data_directory.mkdir(parents=True, exist_ok=True)
        # start() with an empty URL uses the service's default SQLite file.
        self.url = "" if database_url.startswith("sqlite") else database_url
        self._engine = make_engine(self.url or sqlite_url(data_directory / "pymager.sqlite3"), pool_size=1)

    def __call__(self, work: Callable[[Connection], Any]) -> Any:
        with self._engine.begin() as connection:
            return work(connection)

    def revision(self) -> str | None:
        return self(lambda connection: MigrationContext.configure(connection).get_current_revision())

    def close(self) -> None:
        self(drop_txn)
        self._engine.dispose()


@pytest.fixture
def store(data_directory: Path, database_url: str) -> Iterator[Store]:
    store = Store(data_directory, database_url)
    store(drop_txn)
    yield store
    store.close()


async def refused(store: Store) -> tuple[Exception, list[Failure]]:
    """Start the service, which must fail; the reason, and what the
    on_start_failure hook (twistd's exit with status 1) was given."""
    failures: list[Failure] = []
    overrides: dict[str, dict[str, Any]] = {
        "server": {"listen": "tcp:0:interface=127.0.0.1"},
        "storage": {"data_directory": str(store.data_directory)},
        "database": {"url": store.url},
    }
    service = PymagerService(load_settings(None, overrides), reactor, on_start_failure=failures.append)
    service.startService()
    try:
        with pytest.raises(SchemaError) as raised:
            await service.when_listening()
    finally:
        await service.stopService()
    return raised.value, failures


@pytest_twisted.ensureDeferred
async def test_an_empty_database_gets_the_current_schema(store: Store, log_events: list[LogEvent]) -> None:
    running = await start(store.data_directory, database_url=store.url)
    await stop(running)
    assert store.revision() == HEAD
    assert any(event.get("log_format", "").startswith("Database schema created") for event in log_events)


@pytest_twisted.ensureDeferred
async def test_a_first_release_database_is_refused_naming_the_upgrade(store: Store) -> None:
    store(create_release_1)
    store(insert_release_1_rows)

    error, failures = await refused(store)

    assert "older than this pymager-tx" in str(error)
    assert "`pymager-admin db upgrade`" in str(error)
    assert [failure.value for failure in failures] == [error]
    # Refusing changed nothing: not even a version table.
    assert store.revision() is None
    assert store(lambda connection: connection.execute(text("SELECT image_id FROM originals")).all()) == [
        ("photo",)
    ]


@pytest_twisted.ensureDeferred
async def test_an_upgraded_first_release_database_starts(store: Store) -> None:
    store(create_release_1)
    store(upgrade_txn)
    running = await start(store.data_directory, database_url=store.url)
    await stop(running)


@pytest_twisted.ensureDeferred
async def test_a_database_newer_than_the_code_is_refused(store: Store) -> None:
    store(upgrade_txn)
    store(lambda connection: connection.execute(text("UPDATE alembic_version SET version_num = '9999'")))

    error, failures = await refused(store)

    assert "this pymager-tx is older than the database" in str(error)
    assert len(failures) == 1
    assert store.revision() == "9999"


@pytest_twisted.ensureDeferred
async def test_development_mode_rebuilds_an_outdated_database_from_the_migrations(store: Store) -> None:
    store(create_release_1)
    running = await start(store.data_directory, database_url=store.url, server={"dev_mode": True})
    await stop(running)
    assert store.revision() == HEAD
