"""Nothing acknowledged is ever lost: recovery, repair and uploads racing
each other, with the interleavings that used to lose data forced, on SQLite
and on PostgreSQL (READ COMMITTED, where two statements of one transaction
can see two states of a row).

Each test drives the real transactions in a fixed order: another process's
transaction commits at an exact point of the one under test (tests/interleave),
or another process acts just before a file is removed (InterceptedBlobs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.database import Database, make_engine
from pymager_tx.adapters.sql.originals_txn import (
    begin_removal_txn,
    claim_original_txn,
    find_original_txn,
    mark_original_ready_txn,
)
from pymager_tx.adapters.sql.renditions_txn import claims_txn, lookup_derived_txn, record_derived_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.api import StoredImage
from pymager_tx.app.consistency import LostOriginal, Report, check, repair
from pymager_tx.app.peers import POLL_MOST
from pymager_tx.app.service import ImageService, claimed_key
from pymager_tx.core.errors import ImageIdTaken, StorageUnavailable
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import DerivedRecord, OriginalStatus
from pymager_tx.ports import immediate
from tests.db.test_repository import NOW, claimed, pending
from tests.fakes import InterceptedBlobs, ManualOffload
from tests.images import BLUE, RED, jpeg
from tests.interleave import after_statement
from tests.results import failure_of, result_of
from tests.service_calls import original_body
from tests.unit.test_consistency import LIVE, Store
from tests.unit.test_peers import World, ask, holding
from tests.unit.test_service import PHOTO, POLICY, files, run


@pytest.fixture
def world(tmp_path: Path, database: Database) -> World:
    return World(tmp_path / "files", database)


@pytest.fixture
def store(tmp_path: Path, database: Database) -> Store:
    return Store(tmp_path / "files", database)


@pytest.fixture
def elsewhere(database: Database) -> Iterator[Database]:
    """The same database through connections of another process."""
    url = database.engine.url.render_as_string(hide_password=False)
    other = Database(make_engine(url, pool_size=1), immediate)
    yield other
    other.engine.dispose()


def _selects_unfinished(statement: str) -> bool:
    return statement.startswith("SELECT") and "originals.status IN" in statement


def test_recovery_never_removes_an_upload_its_peer_finishes_meanwhile(
    world: World, elsewhere: Database
) -> None:
    a = world.process("a")
    # a has claimed the ID and stored the file; it is about to mark it ready.
    generation = "0123abcd"
    record = replace(pending("photo", generation), blob_key=original_key(PHOTO, generation))
    result_of(world.database.transact(claim_original_txn, record, "a"))
    result_of(a._blobs.put(record.blob_key, jpeg()))
    b = world.process("b")

    def a_finishes_then_dies() -> None:
        assert result_of(elsewhere.transact(mark_original_ready_txn, "photo", generation, NOW))
        world.dies("a")

    # b starts (its recovery runs) just as a finishes: the row b listed as
    # pending is ready by the time b acts on it.
    with after_statement(world.database.engine, _selects_unfinished, a_finishes_then_dies) as fired:
        result_of(run(b.recover()))
    assert fired, "the listing of unfinished rows ran"
    assert result_of(run(original_body(b, PHOTO))).data == jpeg()


def _reads_the_row(statement: str) -> bool:
    return (
        statement.startswith("SELECT")
        and "originals.status" in statement
        and "WHERE originals.image_id" in statement
    )


def test_an_upload_that_found_its_id_being_deleted_never_removes_the_upload_that_took_it(
    tmp_path: Path, database: Database, elsewhere: Database
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(blobs.recover())
    late = ImageService(database, blobs, immediate, POLICY)
    other = ImageService(elsewhere, blobs, immediate, POLICY)
    result_of(run(late.store_original(PHOTO, jpeg((80, 60), RED))))
    # A deletion that failed half-way: the row is marked, its file still there.
    result_of(database.transact(begin_removal_txn, "photo", NOW))

    def another_client_uploads() -> None:
        # It finishes the deletion, takes the ID, and is told 201.
        assert (
            result_of(run(other.store_original(PHOTO, jpeg((80, 60), BLUE)))).status is OriginalStatus.READY
        )

    # The late upload reads the row (deleting), then the other client's
    # upload completes before the late one acts on what it read.
    with after_statement(database.engine, _reads_the_row, another_client_uploads) as fired:
        uploading = run(late.store_original(PHOTO, jpeg((80, 60), RED)))
    assert fired
    failure_of(uploading).trap(ImageIdTaken)
    assert result_of(run(original_body(late, PHOTO))).data == jpeg((80, 60), BLUE)


def test_repair_of_a_lost_original_keeps_an_upload_made_since_the_check(store: Store) -> None:
    generation = store.upload("photo")
    (store.blobs.root / original_key(PHOTO, generation)).unlink()
    report, _ = store.check()
    assert [str(lost) for lost in report.missing_originals] == ["photo"]
    # Between the check and the repair, the image is deleted and uploaded again.
    result_of(run(store.service.delete_original(PHOTO)))
    again = result_of(run(store.service.store_original(PHOTO, jpeg((64, 48), BLUE))))
    result_of(run(repair(report, store.service, store.database, store.blobs)))
    assert result_of(run(original_body(store.service, PHOTO))).record == again


def test_repair_looks_at_an_original_again_before_it_forgets_it(store: Store) -> None:
    generation = store.upload("photo")
    # What a check whose listing missed a directory would report.
    report = Report(missing_originals=[LostOriginal("photo", generation, original_key(PHOTO, generation))])
    result_of(run(repair(report, store.service, store.database, store.blobs)))
    assert result_of(run(original_body(store.service, PHOTO))).record.generation == generation


def _selects_derived_rows(statement: str) -> bool:
    return (
        statement.startswith("SELECT")
        and "FROM derived" in statement
        and "derivation_claims" not in statement
    )


def test_check_never_takes_a_rendition_recorded_meanwhile_for_an_orphan(
    store: Store, elsewhere: Database
) -> None:
    generation = store.upload("kept")
    # A live process has claimed a rendition and stored its file...
    claim = claimed(store.database, "kept", "20x10.jpeg", generation, LIVE)
    key = claimed_key(claim)
    result_of(store.blobs.put(key, b"rendered"))
    record = DerivedRecord(
        image_id="kept",
        variant="20x10.jpeg",
        format="jpeg",
        media_type="image/jpeg",
        width=20,
        height=10,
        byte_length=8,
        sha256="ef" * 32,
        blob_key=key,
        created_at=NOW,
    )

    def it_records_the_rendition() -> None:
        result_of(elsewhere.transact(record_derived_txn, record, generation, claim))

    # ... and records it (ending its claim) while the check reads the
    # database after listing the files: between its derived and its claims.
    with after_statement(
        store.database.engine, _selects_derived_rows, it_records_the_rendition, occurrence=2
    ) as fired:
        report = result_of(run(check(store.database, store.blobs, store.peers)))
    assert fired
    assert report.consistent, report.lines()
    assert result_of(store.database.read(lookup_derived_txn, "kept", "20x10.jpeg")).derived == record


def test_settling_a_dead_claim_never_removes_a_file_a_peer_records_meanwhile(world: World) -> None:
    holding(world, "a")
    world.dies("a")
    c = world.process("c")
    asked: list[Deferred[object]] = []

    def c_asks_for_the_rendition(_key: str) -> None:
        if not asked:
            asked.append(ask(c))

    blobs = InterceptedBlobs(FilesystemBlobStore(world.root, immediate))
    blobs.before_delete = c_asks_for_the_rendition
    b = world.process("b", blobs=blobs)
    # b settles a's claim; just before it removes the file a may have left,
    # c is asked for the rendition.
    result_of(run(b.recover()))
    assert asked, "b removed a file"
    world.wait(POLL_MOST)
    served = result_of(asked[0])
    assert isinstance(served, StoredImage)
    assert result_of(c._blobs.get(served.record.blob_key)) == served.data
    assert result_of(world.database.read(claims_txn)) == []


def test_a_process_dying_while_it_settles_a_dead_claim_leaves_the_file_to_the_next(world: World) -> None:
    holding(world, "a")
    key = claimed_key(result_of(world.database.read(claims_txn))[0])
    result_of(FilesystemBlobStore(world.root, immediate).put(key, b"stored, never recorded"))
    world.dies("a")
    dying = InterceptedBlobs(FilesystemBlobStore(world.root, immediate))
    dying.deletes_fail = True
    b = world.process("b", blobs=dying)
    failure_of(run(b.recover())).trap(StorageUnavailable)  # b dies before removing the file
    world.dies("b")
    d = world.process("d")
    result_of(run(d.recover()))
    assert key not in files(d._blobs)  # type: ignore[arg-type]
    assert result_of(world.database.read(claims_txn)) == []


def test_a_process_dying_after_its_record_was_refused_leaves_the_file_to_the_next(world: World) -> None:
    blobs = InterceptedBlobs(FilesystemBlobStore(world.root, immediate))
    result_of(blobs.recover())
    imaging = ManualOffload()
    a = world.process("a", imaging, blobs=blobs)
    upload = run(a.store_original(PHOTO, jpeg((400, 300))))
    imaging.run_all()
    result_of(upload)
    asked = ask(a)
    b = world.process("b")
    result_of(run(b.delete_original(PHOTO)))  # while a derives
    # a's record is refused (the original is gone); a dies removing its file.
    blobs.deletes_fail = True
    imaging.run_all()
    failure_of(asked).trap(StorageUnavailable)
    world.dies("a")
    d = world.process("d")
    result_of(run(d.recover()))
    assert files(d._blobs) == []  # type: ignore[arg-type]
    assert result_of(world.database.read(claims_txn)) == []
    assert result_of(world.database.read(find_original_txn, "photo")) is None
