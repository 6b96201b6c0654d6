"""Rows of renditions remembered without their bytes (the memory cache off):
a warm read then costs a file read and no database query, and never
outlives a delete by more than the images held in memory would."""

from __future__ import annotations

from pathlib import Path

from twisted.logger import LogEvent

from pymager_tx.adapters.cluster.epoch import SharedEpoch
from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.renditions_txn import forget_derived_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.record_cache import RecordCache
from pymager_tx.app.rendition_cache import Mark, RenditionCache
from pymager_tx.app.service import ImageService
from pymager_tx.core.errors import ImageNotFound
from pymager_tx.core.model import DerivedRecord
from pymager_tx.ports import IEpoch, LocalEpoch, immediate
from tests.conftest import derivations
from tests.images import BLUE, RED, close_to, jpeg, opened
from tests.results import failure_of, result_of
from tests.service_calls import derived_body
from tests.unit.test_rendition_cache import Clock, record
from tests.unit.test_service import PHOTO, POLICY, derived, run


class TestRecordCache:
    def test_bounded_by_count_least_recently_used_out_first(self) -> None:
        records = RecordCache(2, lambda mark: True)
        mark = Mark(1, 1)
        for name in "abc":
            records.put((name, "v"), record(name), mark)
        assert len(records) == 2
        assert records.fresh(("a", "v")) is None
        assert records.fresh(("b", "v")) == (record("b"), mark)
        records.put(("d", "v"), record("d"), mark)
        # b was used after c: c goes first.
        assert records.fresh(("c", "v")) is None
        assert records.fresh(("b", "v")) is not None

    def test_a_record_whose_mark_no_longer_holds_is_not_served(self) -> None:
        held = RenditionCache(0, 0, poll_seconds=1.0, clock=Clock(), max_records=10)
        held.heard_removals(3)
        held.records.put(("a", "v"), record("a"), held.mark())
        assert held.records.fresh(("a", "v")) is not None
        held.epoch.bump()
        assert held.records.fresh(("a", "v")) is None

    def test_none_kept_when_off(self) -> None:
        records = RecordCache(0, lambda mark: True)
        records.put(("a", "v"), record("a"), Mark(1, 1))
        assert records.fresh(("a", "v")) is None


def recording_service(
    database: Database, blobs: FilesystemBlobStore, epoch: IEpoch, clock: Clock
) -> ImageService:
    """A service with no bytes held in memory, only rows."""
    cache = RenditionCache(0, 0, poll_seconds=1.0, epoch=epoch, clock=clock, max_records=100)
    service = ImageService(database, blobs, immediate, POLICY, cache=cache)
    result_of(run(service.poll_removals()))
    return service


class TestWarmFromStorage:
    def test_a_served_rendition_is_read_without_its_row_while_nothing_is_deleted(
        self, database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        clock = Clock()
        service = recording_service(database, blobs, LocalEpoch(), clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        first = derived(service, "photo-100x100.jpg")
        assert isinstance(first.record, DerivedRecord)
        # The row goes, the file stays: only a remembered row finds it.
        result_of(database.transact(forget_derived_txn, first.record))
        for _ in range(3):
            clock.now += 1.0
            result_of(run(service.poll_removals()))
            assert derived(service, "photo-100x100.jpg") == first
        assert derivations(log_events) == ["photo-100x100.jpeg"]
        # Once the polls stop, the database is asked again: it no longer
        # knows the rendition, so it is derived again.
        clock.now += 3.0
        derived(service, "photo-100x100.jpg")
        assert derivations(log_events) == ["photo-100x100.jpeg"] * 2

    def test_the_file_is_read_each_time_not_held(
        self, database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        service = recording_service(database, blobs, LocalEpoch(), Clock())
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        first = derived(service, "photo-100x100.jpg")
        assert isinstance(first.record, DerivedRecord)
        # A lost file is found lost on the next read, and derived again.
        result_of(blobs.delete(first.record.blob_key))
        again = derived(service, "photo-100x100.jpg")
        assert again.data is not None and opened(again.data).size == (100, 100)
        assert derivations(log_events) == ["photo-100x100.jpeg"] * 2

    def test_a_delete_here_is_seen_at_once(self, database: Database, blobs: FilesystemBlobStore) -> None:
        service = recording_service(database, blobs, LocalEpoch(), Clock())
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        derived(service, "photo-100x100.jpg")
        result_of(run(service.delete_original(PHOTO)))
        failure_of(run(service.derived("photo-100x100.jpg"))).trap(ImageNotFound)

    def test_a_delete_by_another_process_on_this_machine_is_seen_at_once(
        self, database: Database, blobs: FilesystemBlobStore, tmp_path: Path
    ) -> None:
        mine, theirs = SharedEpoch.of(tmp_path), SharedEpoch.of(tmp_path)
        mine.open()
        theirs.open()
        try:
            clock = Clock()
            service = recording_service(database, blobs, mine, clock)
            other = recording_service(database, blobs, theirs, clock)
            result_of(run(other.store_original(PHOTO, jpeg((400, 300), color=RED))))
            assert close_to(opened(derived(service, "photo-100x100.png").data).getpixel((50, 50)), RED)
            result_of(run(other.delete_original(PHOTO)))
            # Not even the record (a HEAD's answer) is served.
            failure_of(run(service.derived("photo-100x100.png"))).trap(ImageNotFound)
            result_of(run(other.store_original(PHOTO, jpeg((400, 300), color=BLUE))))
            assert close_to(opened(derived(service, "photo-100x100.png").data).getpixel((50, 50)), BLUE)
        finally:
            mine.close()
            theirs.close()

    def test_a_delete_on_another_machine_is_seen_at_the_next_poll(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        clock = Clock()
        service = recording_service(database, blobs, LocalEpoch(), clock)
        elsewhere = recording_service(database, blobs, LocalEpoch(), clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        derived(service, "photo-100x100.jpg")
        result_of(run(elsewhere.delete_original(PHOTO)))
        # Until the poll, the row is remembered (its file is gone: asked again).
        assert result_of(run(service.derived("photo-100x100.jpg"))).record is not None
        result_of(run(service.poll_removals()))
        failure_of(run(derived_body(service, "photo-100x100.jpg"))).trap(ImageNotFound)
