"""The first request for each rendition of an upload stored in this process
goes straight to its claim, without a lookup; whatever happened to the
original elsewhere meanwhile, the answer is the one a lookup would have
led to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.fresh_uploads import FreshUploads
from pymager_tx.app.rendition_cache import Mark, RenditionCache
from pymager_tx.app.service import ImageService
from pymager_tx.core.errors import ImageNotFound, Overloaded
from pymager_tx.core.model import FocalPoint, OriginalRecord, OriginalStatus
from pymager_tx.ports import LocalEpoch, immediate
from tests.conftest import derivations
from tests.db.test_repository import pending
from tests.images import BLUE, RED, close_to, encode, halves, jpeg, mean_colour, opened
from tests.results import failure_of, result_of
from tests.unit.test_rendition_cache import Clock
from tests.unit.test_service import PHOTO, POLICY, derived, run


def original(image_id: str = "a") -> OriginalRecord:
    return replace(pending(image_id), status=OriginalStatus.READY)


class TestFreshUploads:
    def test_each_variant_is_first_asked_once(self) -> None:
        uploads = FreshUploads(10, lambda: Mark(1, 1), lambda mark: True)
        uploads.stored(original(), uploads.mark())
        assert uploads.first_ask("a", "100x100.jpeg") == (original(), Mark(1, 1))
        assert uploads.first_ask("a", "100x100.jpeg") is None
        assert uploads.first_ask("a", "20x10.jpeg") is not None
        assert uploads.first_ask("b", "100x100.jpeg") is None

    def test_not_used_once_a_removal_signal_spoke(self) -> None:
        held = RenditionCache(0, 0, poll_seconds=1.0, clock=Clock(), max_records=10)
        held.heard_removals(3)
        held.uploads.stored(original(), held.uploads.mark())
        held.epoch.bump()
        assert held.uploads.first_ask("a", "100x100.jpeg") is None
        assert len(held.uploads) == 0

    def test_bounded_by_count_and_forgotten_on_request(self) -> None:
        uploads = FreshUploads(2, lambda: Mark(1, 1), lambda mark: True)
        for name in "abc":
            uploads.stored(original(name), uploads.mark())
        assert len(uploads) == 2
        assert uploads.first_ask("a", "v") is None
        uploads.forget("b")
        assert uploads.first_ask("b", "v") is None
        assert uploads.first_ask("c", "v") is not None

    def test_none_kept_when_off_or_without_polls(self) -> None:
        off = FreshUploads(0, lambda: Mark(1, 1), lambda mark: True)
        off.stored(original(), off.mark())
        assert off.first_ask("a", "v") is None
        # The memory cache off (no polls): no mark is ever current.
        unpolled = RenditionCache(0, 0, poll_seconds=0, max_records=10)
        unpolled.uploads.stored(original(), unpolled.uploads.mark())
        assert unpolled.uploads.first_ask("a", "v") is None


class Calls:
    """Counts the service's calls of one method of its database, passing
    them on."""

    def __init__(self, database: Database, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        call: Callable[..., Deferred[Any]] = getattr(database, name)

        def counted(*args: Any) -> Deferred[Any]:
            self.count += 1
            return call(*args)

        monkeypatch.setattr(database, name, counted)


def polled_service(
    database: Database, blobs: FilesystemBlobStore, clock: Clock, admission: ImageAdmission | None = None
) -> ImageService:
    """A process with the memory cache on, as a server has it, and its own
    epoch: another of these is a process on another machine, unheard until
    its next poll."""
    cache = RenditionCache(
        1 << 20, 1 << 20, poll_seconds=1.0, epoch=LocalEpoch(), clock=clock, max_records=100
    )
    service = ImageService(database, blobs, immediate, POLICY, cache=cache, admission=admission)
    result_of(run(service.poll_removals()))
    return service


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TestFirstRenditionsOfAnUpload:
    def test_are_derived_without_a_lookup(
        self,
        database: Database,
        blobs: FilesystemBlobStore,
        clock: Clock,
        monkeypatch: pytest.MonkeyPatch,
        log_events: list[LogEvent],
    ) -> None:
        service = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300), color=RED))))
        lookups = Calls(database, "lookup_derived", monkeypatch)
        first = derived(service, "photo-100x100-fit.jpg")
        assert opened(first.data).size == (100, 75)
        assert close_to(mean_colour(opened(first.data)), RED)
        derived(service, "photo-20x10-pad.png")
        assert lookups.count == 0
        assert derivations(log_events) == ["photo-100x100-fit.jpeg", "photo-20x10-pad.png"]
        # Recorded as any rendition is: served from memory next.
        assert derived(service, "photo-100x100-fit.jpg").data == first.data
        assert lookups.count == 0
        # A crop depends on the focal point, which only the database knows.
        derived(service, "photo-100x100.jpg")
        assert lookups.count == 1

    def test_one_another_process_derived_is_served_not_derived_again(
        self,
        database: Database,
        blobs: FilesystemBlobStore,
        clock: Clock,
        monkeypatch: pytest.MonkeyPatch,
        log_events: list[LogEvent],
    ) -> None:
        service = polled_service(database, blobs, clock)
        elsewhere = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        theirs = derived(elsewhere, "photo-100x100-fit.jpg")
        lookups = Calls(database, "lookup_derived", monkeypatch)
        ours = derived(service, "photo-100x100-fit.jpg")
        assert ours.record == theirs.record and ours.data == theirs.data
        assert derivations(log_events) == ["photo-100x100-fit.jpeg"]
        # The claim said done; the rendition's row was read then.
        assert lookups.count == 1

    def test_one_another_process_derived_is_served_while_the_image_queue_is_full(
        self, database: Database, blobs: FilesystemBlobStore, clock: Clock
    ) -> None:
        admission = ImageAdmission(slots=1, max_queue=0, clock=task.Clock())
        service = polled_service(database, blobs, clock, admission)
        elsewhere = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        theirs = derived(elsewhere, "photo-100x100-fit.jpg")
        waiting = admission.reserve()  # every place in the queue taken
        try:
            # Refused a place before its claim could say "done": the lookup finds it.
            assert derived(service, "photo-100x100-fit.jpg").data == theirs.data
            # What is not derived anywhere yet is refused, as before.
            failure_of(run(service.derived("photo-20x10-fit.jpg"))).trap(Overloaded)
        finally:
            waiting.release()

    def test_one_deleted_on_another_machine_is_not_found(
        self, database: Database, blobs: FilesystemBlobStore, clock: Clock
    ) -> None:
        service = polled_service(database, blobs, clock)
        elsewhere = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        result_of(run(elsewhere.delete_original(PHOTO)))
        # Unheard here until the next poll: the claim finds the ID gone.
        failure_of(run(service.derived("photo-100x100-fit.jpg"))).trap(ImageNotFound)
        assert list(blobs.root.rglob("*.jpeg")) == []

    def test_one_replaced_on_another_machine_is_derived_from_the_new_upload(
        self, database: Database, blobs: FilesystemBlobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        service = polled_service(database, blobs, clock)
        elsewhere = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300), color=RED))))
        result_of(run(elsewhere.replace_original(PHOTO, jpeg((400, 300), color=BLUE), None)))
        answer = derived(service, "photo-100x100-fit.jpg")
        assert close_to(mean_colour(opened(answer.data)), BLUE)
        # The upload this process stored is known gone: its other sizes
        # are looked up, not claimed for it first.
        claims = Calls(database, "claim_derivation", monkeypatch)
        assert close_to(mean_colour(opened(derived(service, "photo-20x10-fit.jpg").data)), BLUE)
        assert claims.count == 1

    def test_a_crop_refocused_on_another_machine_is_made_for_the_new_focal_point(
        self, database: Database, blobs: FilesystemBlobStore, clock: Clock
    ) -> None:
        service = polled_service(database, blobs, clock)
        elsewhere = polled_service(database, blobs, clock)
        result_of(run(service.store_original(PHOTO, encode(halves((400, 100)), "JPEG", quality=95))))
        result_of(run(elsewhere.set_focal_point(PHOTO, FocalPoint(0.9, 0.5))))
        answer = derived(service, "photo-100x100.jpg")
        assert close_to(mean_colour(opened(answer.data)), BLUE)
        # Recorded for the new focal point: the next request is served it.
        assert derived(service, "photo-100x100.jpg").data == answer.data
