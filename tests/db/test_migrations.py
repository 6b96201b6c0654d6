"""The migrations, on SQLite and on PostgreSQL: from empty, from the first
release, and always to the schema that schema.py declares."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, select, text

from pymager_tx.adapters.sql.database import Database, make_engine
from pymager_tx.adapters.sql.migrations import alembic_config
from pymager_tx.adapters.sql.originals_txn import begin_removal_txn, removal_count_txn
from pymager_tx.adapters.sql.schema import derivation_claims, derived, metadata, originals
from pymager_tx.adapters.sql.schema_version import (
    LOCK_KEY,
    SchemaError,
    SchemaStatus,
    State,
    drop_txn,
    startup_txn,
    status_txn,
    upgrade_txn,
)
from pymager_tx.ports import immediate
from tests.db.release_1 import NOW, create_release_1, insert_release_1_rows
from tests.results import failure_of, result_of

T = TypeVar("T")
HEAD = "0007"


def migrate_to(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def downgrade_to(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


def version_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def differences(connection: Connection) -> list[Any]:
    """What Alembic's autogenerate would change to reach schema.metadata."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def snapshot(connection: Connection) -> dict[str, Any]:
    """Everything of the tables that a migration could get wrong, constraint
    names included (compare_metadata skips those)."""
    inspector = inspect(connection)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        tables[table] = {
            "columns": [
                (column["name"], column["type"].compile(dialect=connection.dialect), column["nullable"])
                for column in inspector.get_columns(table)
            ],
            "primary key": inspector.get_pk_constraint(table),
            "foreign keys": inspector.get_foreign_keys(table),
            "indexes": sorted(inspector.get_indexes(table), key=lambda index: str(index["name"])),
            "checks": sorted(
                (check["name"], check["sqltext"]) for check in inspector.get_check_constraints(table)
            ),
        }
    return tables


class Runner:
    """Transaction bodies run at once, as Database.transact runs them."""

    def __init__(self, engine: Engine) -> None:
        self.database = Database(engine, immediate)

    def __call__(self, work: Callable[..., T], *args: Any) -> T:
        return result_of(self.database.transact(work, *args))


@pytest.fixture
def run(database_url: str) -> Iterator[Runner]:
    engine = make_engine(database_url, pool_size=2)
    runner = Runner(engine)
    runner(drop_txn)
    yield runner
    runner(drop_txn)
    engine.dispose()


def test_an_empty_database_migrates_to_the_declared_schema(run: Runner) -> None:
    before, after = run(upgrade_txn)
    assert (before.state, after.state, after.revision) == (State.EMPTY, State.CURRENT, HEAD)
    assert run(version_of) == HEAD
    assert run(differences) == []
    migrated = run(snapshot)

    run(drop_txn)
    run(metadata.create_all)
    assert run(snapshot) == migrated


def test_revision_0001_is_the_first_release_schema(run: Runner) -> None:
    run(create_release_1)
    release_1 = run(snapshot)
    run(drop_txn)
    run(migrate_to, "0001")
    assert run(snapshot) == release_1


def test_a_first_release_database_is_taken_to_be_at_0001(run: Runner) -> None:
    run(create_release_1)
    assert run(status_txn) == SchemaStatus(State.OUTDATED, "0001", HEAD)


def test_a_first_release_database_upgrades_and_keeps_its_rows(run: Runner) -> None:
    run(create_release_1)
    run(insert_release_1_rows)

    before, after = run(upgrade_txn)

    assert (before.revision, after) == ("0001", SchemaStatus(State.CURRENT, HEAD, HEAD))
    assert run(differences) == []
    original = run(lambda c: c.execute(select(originals)).one()._asdict())
    assert original["image_id"] == "photo"
    assert original["owner"] is None
    assert original["created_at"] == NOW
    assert run(lambda c: c.execute(select(derived.c.variant)).scalars().all()) == ["100x100.jpeg"]
    assert run(lambda c: c.execute(select(derivation_claims)).all()) == []


def test_a_database_at_0001_with_its_version_upgrades(run: Runner) -> None:
    run(migrate_to, "0001")
    assert run(upgrade_txn)[1] == SchemaStatus(State.CURRENT, HEAD, HEAD)
    assert run(differences) == []


def test_downgrading_0002_keeps_the_rows_and_the_first_release_schema(run: Runner) -> None:
    run(create_release_1)
    release_1 = run(snapshot)
    run(insert_release_1_rows)
    run(upgrade_txn)

    run(downgrade_to, "0001")

    assert run(snapshot) == release_1
    # On SQLite a copied originals table would have cascaded to derived.
    assert run(lambda c: c.execute(select(derived.c.variant)).scalars().all()) == ["100x100.jpeg"]


def test_upgrading_0002_starts_the_removal_counter_at_zero(run: Runner) -> None:
    run(create_release_1)
    run(insert_release_1_rows)
    run(upgrade_txn)
    run(downgrade_to, "0002")
    run(upgrade_txn)
    assert run(removal_count_txn) == 0
    assert run(begin_removal_txn, "photo", NOW) is not None
    assert run(removal_count_txn) == 1


def test_upgrading_a_current_database_changes_nothing(run: Runner) -> None:
    run(upgrade_txn)
    assert run(upgrade_txn) == (SchemaStatus(State.CURRENT, HEAD, HEAD),) * 2


def test_start_up_creates_the_schema_of_an_empty_database(run: Runner) -> None:
    assert run(startup_txn).state is State.EMPTY
    assert run(startup_txn) == SchemaStatus(State.CURRENT, HEAD, HEAD)
    assert run(differences) == []


def test_start_up_refuses_an_outdated_database_and_leaves_it_alone(run: Runner) -> None:
    run(create_release_1)
    before = run(snapshot)
    failure = failure_of(run.database.transact(startup_txn))
    failure.trap(SchemaError)
    assert "pymager-admin db upgrade" in str(failure.value)
    assert run(snapshot) == before
    assert run(version_of) is None


def test_start_up_and_upgrade_refuse_a_database_newer_than_the_code(run: Runner) -> None:
    run(upgrade_txn)
    run(lambda c: c.execute(text("UPDATE alembic_version SET version_num = '9999'")))
    assert run(status_txn) == SchemaStatus(State.UNKNOWN, "9999", HEAD)
    for work in (startup_txn, upgrade_txn):
        failure = failure_of(run.database.transact(work))
        failure.trap(SchemaError)
        assert "older than the database" in str(failure.value)
    assert run(version_of) == "9999"


def test_a_revision_left_without_its_tables_counts_as_empty(run: Runner) -> None:
    # A helper that drops schema.metadata's tables leaves alembic_version.
    run(upgrade_txn)
    run(metadata.drop_all)
    assert run(status_txn).state is State.EMPTY
    run(startup_txn)
    assert run(differences) == []


def test_drop_removes_the_revision_too(run: Runner) -> None:
    run(upgrade_txn)
    run(drop_txn)
    assert run(lambda c: inspect(c).get_table_names()) == []


@pytest.mark.postgres
def test_processes_starting_at_once_create_the_schema_once(postgres_server_url: str) -> None:
    engine = make_engine(postgres_server_url, pool_size=4)
    run = Runner(engine)
    run(drop_txn)
    results: list[SchemaStatus | BaseException] = []

    def start_up() -> None:
        try:
            results.append(run(startup_txn))
        except BaseException as error:
            results.append(error)

    try:
        with engine.begin() as holder:
            # Hold the start-up lock so that both threads queue on it, then
            # let them race for it.
            holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            threads = [threading.Thread(target=start_up) for _ in range(2)]
            for thread in threads:
                thread.start()
            while _advisory_waiters(engine) < 2:
                assert all(thread.is_alive() for thread in threads), results
        for thread in threads:
            thread.join(timeout=60)
        states = sorted(result.state.value for result in results if isinstance(result, SchemaStatus))
        assert states == ["current", "empty"], results
        assert run(differences) == []
    finally:
        run(drop_txn)
        engine.dispose()


def _advisory_waiters(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
        )
