"""The metadata transactions, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Connection, event, update

from pymager_tx.adapters.sql import database as database_module
from pymager_tx.adapters.sql import renditions_txn
from pymager_tx.adapters.sql.database import Database, make_engine, sqlite_url
from pymager_tx.adapters.sql.originals_txn import (
    abandon_upload_txn,
    begin_removal_txn,
    claim_original_txn,
    find_original_txn,
    forget_original_txn,
    mark_original_ready_txn,
    removal_count_txn,
    status_of_txn,
    unfinished_txn,
)
from pymager_tx.adapters.sql.renditions_txn import (
    claim_derivation_txn,
    claims_txn,
    lookup_derived_txn,
    record_derived_txn,
    release_claim_txn,
)
from pymager_tx.adapters.sql.schema import derivation_claims
from pymager_tx.core.errors import ImageIdTaken
from pymager_tx.core.model import DerivedRecord, OriginalRecord, OriginalStatus
from pymager_tx.core.records import Claim, ClaimOutcome, Recorded, RowState
from pymager_tx.ports import immediate
from tests.results import failure_of, result_of

NOW = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)


def pending(image_id: str = "photo", generation: str = "g1") -> OriginalRecord:
    return OriginalRecord(
        image_id=image_id,
        generation=generation,
        status=OriginalStatus.PENDING,
        format="jpeg",
        media_type="image/jpeg",
        width=800,
        height=600,
        byte_length=128425,
        sha256="ab" * 32,
        blob_key=f"originals/aa/bb/{image_id}/{generation}",
        created_at=NOW,
    )


def rendition(image_id: str = "photo", variant: str = "100x100.jpeg") -> DerivedRecord:
    return DerivedRecord(
        image_id=image_id,
        variant=variant,
        format="jpeg",
        media_type="image/jpeg",
        width=100,
        height=100,
        byte_length=2856,
        sha256="cd" * 32,
        blob_key=f"derived/aa/bb/{image_id}/g1/{variant}",
        created_at=NOW,
    )


LEASE = timedelta(seconds=30)


def stored(database: Database, image_id: str = "photo", generation: str = "g1") -> None:
    result_of(database.transact(claim_original_txn, pending(image_id, generation), "owner-1"))
    assert result_of(database.transact(mark_original_ready_txn, image_id, generation, NOW))


def claimed(
    database: Database,
    image_id: str = "photo",
    variant: str = "100x100.jpeg",
    generation: str = "g1",
    owner: str = "owner-1",
) -> Claim:
    outcome, claim = result_of(
        database.transact(claim_derivation_txn, image_id, variant, generation, owner, uuid4().hex, LEASE)
    )
    assert outcome is ClaimOutcome.CLAIMED and claim is not None
    return claim


def record(database: Database, derived_record: DerivedRecord, generation: str = "g1") -> Recorded:
    """Claim the rendition (of the current upload) and record it for generation."""
    claim = claimed(database, derived_record.image_id, derived_record.variant)
    recorded: Recorded = result_of(database.transact(record_derived_txn, derived_record, generation, claim))
    return recorded


@pytest.fixture(params=["one statement", "savepoint"])
def claim_insert(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The claim's insert as this database's dialect writes it (insert unless
    held, one statement), and as it is written for a dialect that has no such
    clause (the insert in a savepoint, its key's conflict caught)."""
    if request.param == "savepoint":
        monkeypatch.setattr(renditions_txn, "_INSERT_CLAIM_UNLESS_HELD", {})
    return str(request.param)


def lapse_claims(database: Database) -> None:
    """Every claim's lease runs out, as the database's clock sees it."""

    def lapse(connection: object) -> None:
        past = datetime(2000, 1, 1, tzinfo=UTC)
        connection.execute(update(derivation_claims).values(expires_at=past))  # type: ignore[attr-defined]

    result_of(database.transact(lapse))


def test_a_pending_original_is_invisible_but_holds_its_id(database: Database) -> None:
    result_of(database.transact(claim_original_txn, pending(), "owner-1"))
    assert result_of(database.read(find_original_txn, "photo")) is None
    assert result_of(database.read(status_of_txn, "photo")) is OriginalStatus.PENDING
    failure_of(database.transact(claim_original_txn, pending(generation="g2"), "owner-1")).trap(ImageIdTaken)


def test_a_ready_original_reads_back_with_aware_utc_times(database: Database) -> None:
    stored(database)
    record = result_of(database.read(find_original_txn, "photo"))
    assert record == replace(pending(), status=OriginalStatus.READY)
    assert record.created_at.utcoffset() == timedelta(0)


def test_ids_are_case_sensitive(database: Database) -> None:
    stored(database, "Photo")
    stored(database, "photo")
    assert result_of(database.read(find_original_txn, "PHOTO")) is None


def test_mark_ready_only_applies_to_the_claiming_generation(database: Database) -> None:
    result_of(database.transact(claim_original_txn, pending(), "owner-1"))
    assert not result_of(database.transact(mark_original_ready_txn, "photo", "other", NOW))


@pytest.mark.usefixtures("claim_insert")
def test_derived_rows_are_recorded_for_the_current_generation_only(database: Database) -> None:
    stored(database)
    claim = claimed(database)
    assert result_of(database.transact(record_derived_txn, rendition(), "g0", claim)) is Recorded.GONE
    assert result_of(database.transact(record_derived_txn, rendition(), "g1", claim)) is Recorded.RECORDED
    lookup = result_of(database.read(lookup_derived_txn, "photo", "100x100.jpeg"))
    assert lookup.derived == rendition()
    assert result_of(database.read(lookup_derived_txn, "photo", "800x600.jpeg")).derived is None
    # The record ended the claim.
    assert result_of(database.read(claims_txn)) == []


@pytest.mark.usefixtures("claim_insert")
def test_a_holder_whose_claim_was_taken_over_cannot_record(database: Database) -> None:
    stored(database)
    stalled = claimed(database, owner="stalled")
    lapse_claims(database)
    newer = claimed(database, owner="newer")
    assert newer.token != stalled.token
    assert result_of(database.transact(record_derived_txn, rendition(), "g1", stalled)) is Recorded.LOST
    assert result_of(database.read(claims_txn)) == [newer]
    assert result_of(database.transact(record_derived_txn, rendition(), "g1", newer)) is Recorded.RECORDED


@pytest.mark.usefixtures("claim_insert")
def test_a_live_claim_holds_whatever_the_claimants_own_clocks_say(database: Database) -> None:
    stored(database)
    holder = claimed(database, owner="holder")
    # Claims are judged by the database's clock alone: a claimant cannot
    # bring its own idea of the time.
    outcome, held = result_of(
        database.transact(claim_derivation_txn, "photo", "100x100.jpeg", "g1", "fast", uuid4().hex, LEASE)
    )
    assert (outcome, held) == (ClaimOutcome.HELD, holder)
    lapse_claims(database)
    outcome, taken = result_of(
        database.transact(claim_derivation_txn, "photo", "100x100.jpeg", "g1", "fast", uuid4().hex, LEASE)
    )
    assert outcome is ClaimOutcome.CLAIMED and taken is not None and taken.owner == "fast"


@pytest.mark.usefixtures("claim_insert")
def test_releasing_a_claim_that_was_taken_again_leaves_the_new_one(database: Database) -> None:
    stored(database)
    old = claimed(database, owner="me")
    # The same process claims again (for a newer upload under the ID, say).
    new = claimed(database, owner="me")
    result_of(database.transact(release_claim_txn, old))
    assert result_of(database.read(claims_txn)) == [new]


@pytest.mark.usefixtures("claim_insert")
def test_a_claim_on_a_recorded_rendition_is_done_and_leaves_no_claim(database: Database) -> None:
    stored(database)
    assert record(database, rendition()) is Recorded.RECORDED
    outcome, claim = result_of(
        database.transact(claim_derivation_txn, "photo", "100x100.jpeg", "g1", "late", uuid4().hex, LEASE)
    )
    assert (outcome, claim) == (ClaimOutcome.DONE, None)
    assert result_of(database.read(claims_txn)) == []


def test_a_claim_is_one_insert_on_both_databases(database: Database) -> None:
    stored(database)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        holder = claimed(database, owner="holder")
        # The insert said it inserted: nothing more was tried.
        assert "INSERT" in statements and "UPDATE" not in statements and "SAVEPOINT" not in statements
        statements.clear()
        token = uuid4().hex
        outcome, held = result_of(
            database.transact(claim_derivation_txn, "photo", "100x100.jpeg", "g1", "other", token, LEASE)
        )
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert (outcome, held) == (ClaimOutcome.HELD, holder)
    # Held: the insert did nothing, and the lease-expired takeover found nothing to take.
    assert statements.count("INSERT") == 1 and statements.count("UPDATE") == 1
    assert "SAVEPOINT" not in statements and "RELEASE" not in statements


def test_lookup_of_an_unknown_original(database: Database) -> None:
    lookup = result_of(database.read(lookup_derived_txn, "nobody", "100x100.jpeg"))
    assert lookup.original is None and lookup.derived is None


def test_removal_hides_the_original_and_lists_its_files(database: Database) -> None:
    stored(database)
    record(database, rendition())
    record(database, rendition(variant="800x600.png"))
    removal = result_of(database.transact(begin_removal_txn, "photo", NOW))
    assert removal is not None
    assert removal.original.status is OriginalStatus.DELETING
    assert sorted(removal.derived_keys) == [
        "derived/aa/bb/photo/g1/100x100.jpeg",
        "derived/aa/bb/photo/g1/800x600.png",
    ]
    assert result_of(database.read(find_original_txn, "photo")) is None
    # No derivation can be recorded once the removal began.
    late = Claim("photo", "1x1.png", "g1", "owner-1", "token")
    assert result_of(database.transact(record_derived_txn, rendition(variant="1x1.png"), "g1", late)) in (
        Recorded.LOST,
        Recorded.GONE,
    )
    # A removal that failed half-way is picked up again, whole.
    again = result_of(database.transact(begin_removal_txn, "photo", NOW))
    assert again is not None
    assert sorted(again.derived_keys) == sorted(removal.derived_keys)
    result_of(database.transact(forget_original_txn, "photo", "g1"))
    assert result_of(database.transact(begin_removal_txn, "photo", NOW)) is None


def test_every_deletion_counts_once_and_nothing_else_does(database: Database) -> None:
    assert result_of(database.read(removal_count_txn)) == 0
    stored(database, "one")
    stored(database, "two")
    result_of(database.transact(claim_original_txn, pending("three"), "owner-1"))
    assert result_of(database.read(removal_count_txn)) == 0
    result_of(database.transact(begin_removal_txn, "one", NOW))
    assert result_of(database.transact(begin_removal_txn, "nothing", NOW)) is None
    result_of(database.transact(begin_removal_txn, "two", NOW))
    assert result_of(database.read(removal_count_txn)) == 2


def test_an_abandoned_upload_is_taken_over_only_while_still_pending(database: Database) -> None:
    result_of(database.transact(claim_original_txn, pending(), "owner-1"))
    assert result_of(database.transact(abandon_upload_txn, "photo", "other", NOW)) is None
    assert result_of(database.transact(mark_original_ready_txn, "photo", "g1", NOW))
    assert result_of(database.transact(abandon_upload_txn, "photo", "g1", NOW)) is None
    assert result_of(database.read(status_of_txn, "photo")) is OriginalStatus.READY
    result_of(database.transact(claim_original_txn, pending("other"), "owner-1"))
    removal = result_of(database.transact(abandon_upload_txn, "other", "g1", NOW))
    assert removal is not None and removal.original.image_id == "other"
    assert result_of(database.read(status_of_txn, "other")) is OriginalStatus.DELETING


def test_forgetting_an_original_cascades_to_its_derived_rows(database: Database) -> None:
    stored(database)
    record(database, rendition())
    result_of(database.transact(begin_removal_txn, "photo", NOW))
    result_of(database.transact(forget_original_txn, "photo", "g1"))
    stored(database, generation="g2")
    assert result_of(database.read(lookup_derived_txn, "photo", "100x100.jpeg")).derived is None


def test_unfinished_lists_interrupted_uploads_and_deletions(database: Database) -> None:
    stored(database, "kept")
    stored(database, "being-deleted")
    record(database, rendition("being-deleted"))
    result_of(database.transact(begin_removal_txn, "being-deleted", NOW))
    result_of(database.transact(claim_original_txn, pending("half-uploaded"), "owner-1"))
    unfinished = result_of(database.read(unfinished_txn))
    assert sorted(unfinished, key=lambda state: state.image_id) == [
        RowState("being-deleted", "g1", OriginalStatus.DELETING, None),
        RowState("half-uploaded", "g1", OriginalStatus.PENDING, "owner-1"),
    ]


def test_a_ready_row_is_forgotten_only_once_it_is_being_deleted(database: Database) -> None:
    stored(database)
    result_of(database.transact(forget_original_txn, "photo", "g1"))
    assert result_of(database.read(status_of_txn, "photo")) is OriginalStatus.READY


def test_a_failed_transaction_leaves_nothing(database: Database) -> None:
    def claim_then_fail(connection: object) -> None:
        claim_original_txn(connection, pending(), "owner-1")  # type: ignore[arg-type]
        raise RuntimeError("crash inside the transaction")

    failure_of(database.transact(claim_then_fail)).trap(RuntimeError)
    assert result_of(database.read(status_of_txn, "photo")) is None


@pytest.mark.parametrize("naive", [datetime(2026, 1, 1)])
def test_naive_datetimes_are_refused(database: Database, naive: datetime) -> None:
    failure_of(database.transact(claim_original_txn, replace(pending(), created_at=naive), "owner-1"))


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    database = Database(make_engine(sqlite_url(tmp_path / "pymager.sqlite3"), pool_size=1), immediate)
    try:
        pragmas = result_of(
            database.read(
                lambda conn: (
                    conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                    conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
                )
            )
        )
        assert pragmas == ("wal", 1)
    finally:
        database.engine.dispose()


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ValueError, match="name a file"):
        make_engine("sqlite://", pool_size=1)


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = make_engine("postgresql://pymager@127.0.0.1/pymager", pool_size=1)
    assert engine.dialect.driver == "psycopg"


def _commit_waits_for_disk(conn: Connection) -> bool:
    if conn.dialect.name == "sqlite":
        # In WAL mode, FULL (2) syncs the log at every commit, NORMAL (1) does not.
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one()) == 2
    return conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_only_lapsable_transactions_commit_without_waiting_for_the_disk(database: Database) -> None:
    # Back and forth on the same connections: each kind sets what it needs.
    for _ in range(2):
        assert result_of(database.transact_lapsable(_commit_waits_for_disk)) is False
        assert result_of(database.transact(_commit_waits_for_disk)) is True


def test_claims_and_records_of_renditions_lapse(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim or a rendition's record lost to a power failure costs
    nothing acknowledged (the rendition is derived again), so neither
    waits for the disk: the next durable commit syncs them along."""
    seen: dict[str, bool] = {}

    def observed(name: str, work: Callable[..., object]) -> Callable[..., object]:
        def run(conn: Connection, *args: object) -> object:
            seen[name] = _commit_waits_for_disk(conn)
            return work(conn, *args)

        return run

    monkeypatch.setattr(database_module, "claim_derivation_txn", observed("claim", claim_derivation_txn))
    monkeypatch.setattr(database_module, "record_derived_txn", observed("record", record_derived_txn))
    stored(database)
    outcome, claim = result_of(database.claim_derivation("photo", "100x100.jpeg", "g1", "me", "t1", LEASE))
    assert outcome is ClaimOutcome.CLAIMED and claim is not None
    assert result_of(database.record_derived(rendition(), "g1", claim)) is Recorded.RECORDED
    assert seen == {"claim": False, "record": False}
