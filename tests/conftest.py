from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, make_url
from twisted.logger import LogEvent, globalLogPublisher

from pymager_tx.adapters.sql.database import Database, make_engine, sqlite_url
from pymager_tx.ports import immediate
from tests.results import result_of

POSTGRES_HOWTO = (
    "PostgreSQL tests need PYMAGER_TEST_DATABASE_URL, for example "
    "PYMAGER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_report_header() -> str:
    if os.environ.get("PYMAGER_TEST_DATABASE_URL"):
        return "postgres: tests run against PYMAGER_TEST_DATABASE_URL too"
    return f"postgres: not configured, PostgreSQL tests skip. {POSTGRES_HOWTO}"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A database of its own on the PostgreSQL server the environment names,
    created for this test session and dropped after it.

    Without the variable these tests skip, saying how to enable them; with
    it, an unreachable server fails them.
    """
    base = os.environ.get("PYMAGER_TEST_DATABASE_URL")
    if not base:
        pytest.skip(POSTGRES_HOWTO)
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    name = f"pymager_test_{uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "pymager.sqlite3")
    url: str = request.getfixturevalue("postgres_server_url")
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A fresh schema, with transactions run at once in the test's thread."""
    db = Database(make_engine(database_url, pool_size=2), immediate)
    result_of(db.drop_schema())
    result_of(db.create_schema())
    yield db
    result_of(db.drop_schema())
    db.engine.dispose()


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every twisted.logger event emitted while the test runs."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def derivations(events: list[LogEvent]) -> list[str]:
    """Derived IDs of the derivations the service logged."""
    return [event["derived_id"] for event in events if "derived_id" in event]
