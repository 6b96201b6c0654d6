"""A rendition is answered as soon as it is rendered, while it is stored and
recorded, but only while its original is as current as a rendition held in
memory must be to be served; the store and the record it answers before
still happen, once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.inflight import InFlight
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ImageNotFound, StorageUnavailable
from pymager_tx.core.model import DerivedRecord
from pymager_tx.ports import LocalEpoch, Offload, immediate
from pymager_tx.process.wiring import image_policy
from tests.conftest import derivations
from tests.fakes import InterceptedBlobs, ManualOffload
from tests.images import jpeg, opened
from tests.results import failure_of, no_result, result_of
from tests.service_calls import derived_body
from tests.unit.test_service import PHOTO, POLICY, files, run

NAME = "photo-100x100.jpg"


class HeldDerivedPuts(InterceptedBlobs):
    """Stores originals at once, and renditions when the test says: the
    disk of a derivation that has been rendered and not yet stored."""

    def __init__(self, store: FilesystemBlobStore) -> None:
        super().__init__(store)
        self.held: list[tuple[Deferred[None], str, bytes]] = []
        self.fail_next = False

    def put(self, key: str, data: bytes) -> Deferred[None]:
        if not key.startswith("derived/"):
            return super().put(key, data)
        if self.fail_next:
            self.fail_next = False
            return fail(StorageUnavailable("the disk is away"))
        waiting: Deferred[None] = Deferred()
        self.held.append((waiting, key, data))
        return waiting

    def store_held(self) -> None:
        while self.held:
            waiting, key, data = self.held.pop(0)
            super().put(key, data).chainDeferred(waiting)


def cached_service(
    database: Database,
    blobs: HeldDerivedPuts,
    imaging: Offload = immediate,
    poll_seconds: float = 1.0,
    clock: Clock | None = None,
    policy: ImagePolicy = POLICY,
) -> ImageService:
    """poll_seconds 0: the memory cache trusts nothing without asking the database."""
    cache = RenditionCache(
        max_bytes=10_000_000,
        max_item_bytes=1_000_000,
        poll_seconds=poll_seconds,
        epoch=LocalEpoch(),
        clock=(clock or Clock()).seconds,
    )
    service = ImageService(database, blobs, imaging, policy, cache=cache)
    result_of(run(service.poll_removals()))
    upload = run(service.store_original(PHOTO, jpeg((400, 300))))
    if isinstance(imaging, ManualOffload):
        imaging.run_all()
    result_of(upload)
    return service


def recorded(database: Database) -> DerivedRecord | None:
    return result_of(database.lookup_derived(PHOTO.value, "100x100.jpeg")).derived


def test_answered_before_its_file_and_row_exist_and_both_follow(
    database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
) -> None:
    held = HeldDerivedPuts(blobs)
    service = cached_service(database, held)
    answer = result_of(run(derived_body(service, NAME)))
    assert opened(answer.data or b"").size == (100, 100)
    assert recorded(database) is None and not [name for name in files(blobs) if "100x100" in name]
    # Asked again meanwhile: the same answer, not a second derivation, and
    # nothing taken for a row that is not written yet (a HEAD reads no
    # file; a GET then would have found it missing and forgotten the row).
    again = result_of(run(derived_body(service, NAME)))
    assert again == answer
    head = result_of(run(service.derived(NAME)))
    assert head.record == answer.record
    assert result_of(run(head.body())).data == answer.data
    assert not [event for event in log_events if "missing" in event.get("log_format", "")]
    # A stopping server waits for this before it closes the database.
    settled = service.derivations_settled()
    no_result(settled)
    held.store_held()
    result_of(settled)
    row = recorded(database)
    assert row == answer.record
    assert (blobs.root / row.blob_key).read_bytes() == answer.data
    assert derivations(log_events) == ["photo-100x100.jpeg"]
    # Once recorded, held in memory as a rendition that waited would be:
    # served without its file while nothing is deleted.
    (blobs.root / row.blob_key).unlink()
    assert result_of(run(derived_body(service, NAME))).data == answer.data
    assert held.held == []  # not derived again


def test_not_answered_before_it_is_recorded_when_the_memory_cache_trusts_nothing(
    database: Database, blobs: FilesystemBlobStore
) -> None:
    held = HeldDerivedPuts(blobs)
    service = cached_service(database, held, poll_seconds=0)
    waiting = run(derived_body(service, NAME))
    no_result(waiting)
    held.store_held()
    assert result_of(waiting).record == recorded(database)


def test_not_answered_before_it_is_stored_behind_x_accel_redirect(
    database: Database, blobs: FilesystemBlobStore, tmp_path: Path
) -> None:
    # nginx sends the file the answer names: it must be there first.
    config = tmp_path / "pymager.toml"
    config.write_text('[http]\naccel_redirect_prefix = "/_pymager_files/"\n', encoding="utf-8")
    assert image_policy(load_settings(config)).answer_before_stored is False
    assert image_policy(load_settings()).answer_before_stored is True
    held = HeldDerivedPuts(blobs)
    service = cached_service(database, held, policy=replace(POLICY, answer_before_stored=False))
    waiting = run(derived_body(service, NAME))
    no_result(waiting)
    held.store_held()
    assert result_of(waiting).record == recorded(database)


def test_a_deletion_while_it_renders_is_answered_by_the_record_not_before_it(
    database: Database, blobs: FilesystemBlobStore
) -> None:
    # The deletion bumps the removal epoch: the rendition of a deleted
    # original is never sent, so no cache in front can keep it.
    imaging = ManualOffload()
    held = HeldDerivedPuts(blobs)
    service = cached_service(database, held, imaging)
    waiting = run(derived_body(service, NAME))
    result_of(run(service.delete_original(PHOTO)))
    imaging.run_all()
    no_result(waiting)
    held.store_held()
    failure_of(waiting).trap(ImageNotFound)
    assert files(blobs) == []


def test_a_store_failing_after_the_answer_leaves_nothing_and_is_derived_again(
    database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
) -> None:
    clock = Clock()
    held = HeldDerivedPuts(blobs)
    service = cached_service(database, held, clock=clock)
    held.fail_next = True
    # The asker has its picture; the failure is the log's.
    answer = result_of(run(derived_body(service, NAME)))
    assert opened(answer.data or b"").size == (100, 100)
    assert recorded(database) is None and not [name for name in files(blobs) if "100x100" in name]
    assert [event for event in log_events if "after it was answered" in event.get("log_format", "")]
    # Its claim was released: once the memory cache stops trusting what it
    # holds (no poll for two intervals), the next request derives it again.
    clock.advance(3)
    again = run(derived_body(service, NAME))
    held.store_held()
    assert result_of(again).record == recorded(database)
    assert derivations(log_events) == ["photo-100x100.jpeg"]  # only a recorded one is logged as derived


class TestInFlight:
    def test_an_answer_reaches_the_waiters_and_later_askers_before_the_work_ends(self) -> None:
        flight: InFlight[str, str] = InFlight()
        work: Deferred[str] = Deferred()
        first = flight.run("k", lambda: work)
        second = flight.run("k", lambda: work)
        flight.answer("k", "early")
        assert result_of(first) == "early" and result_of(second) == "early"
        not_again = fail(AssertionError("not started again"))
        assert result_of(flight.run("k", lambda: not_again, take_answer=lambda: True)) == "early"
        # One whose own lookup may be stale (a deletion signalled since)
        # waits for the work's own end; so does one that does not say.
        stale = flight.run("k", lambda: not_again, take_answer=lambda: False)
        unsaid = flight.run("k", lambda: not_again)
        no_result(stale)
        assert "k" in flight
        work.callback("late")
        assert result_of(stale) == "late" and result_of(unsaid) == "late"
        failure_of(not_again).trap(AssertionError)
        assert "k" not in flight
        started: Deferred[str] = Deferred()
        fresh = flight.run("k", lambda: started)
        no_result(fresh)  # the work ended: the next asker starts it afresh

    def test_a_failure_after_the_answer_is_logged_and_not_heard(self, log_events: list[LogEvent]) -> None:
        flight: InFlight[str, str] = InFlight(expected=(KeyError,))
        work: Deferred[str] = Deferred()
        asked = flight.run("k", lambda: work)
        flight.answer("k", "early")
        work.errback(Failure(KeyError("gone meanwhile")))
        assert result_of(asked) == "early"
        [event] = [event for event in log_events if "answered" in event.get("log_format", "")]
        assert "log_failure" not in event  # expected: a line, not a traceback

    def test_idle_waits_for_the_work_running_when_asked_only(self) -> None:
        flight: InFlight[str, str] = InFlight()
        before: Deferred[str] = Deferred()
        flight.run("a", lambda: before)
        idle = flight.idle()
        after: Deferred[str] = Deferred()
        flight.run("b", lambda: after)  # a stopping server's keep-alive request, say
        before.callback("a")
        result_of(idle)
        no_result(flight.run("b", lambda: after))

    def test_idle_once_every_work_has_ended_answered_or_not(self) -> None:
        flight: InFlight[str, str] = InFlight()
        result_of(flight.idle())  # nothing runs
        answered: Deferred[str] = Deferred()
        waited: Deferred[str] = Deferred()
        flight.run("a", lambda: answered)
        flight.run("b", lambda: waited)
        flight.answer("a", "early")
        idle = flight.idle()
        answered.callback("late")
        no_result(idle)  # b still runs
        waited.callback("b")
        result_of(idle)

    def test_no_answer_for_work_nobody_runs(self) -> None:
        flight: InFlight[str, str] = InFlight()
        flight.answer("k", "early")  # nothing under k: nothing kept
        started: Deferred[str] = Deferred()
        no_result(flight.run("k", lambda: started))
