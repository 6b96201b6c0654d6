"""The use cases, on a real database and blob store, without threads."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import LogEvent

from pymager_tx.adapters.cluster.epoch import SharedEpoch
from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.originals_txn import claim_original_txn, status_of_txn
from pymager_tx.adapters.sql.renditions_txn import forget_derived_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.api import StoredImage
from pymager_tx.app.refusals import RecentRefusals
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.core.errors import (
    DerivationTooCostly,
    DerivedNameInvalid,
    ImageIdTaken,
    ImageNotFound,
    InvalidImage,
    OriginalLost,
    Overloaded,
    SizeNotAllowed,
    SizeOutOfBounds,
    StorageUnavailable,
    TooManyPixels,
    UnsupportedOutputFormat,
    UploadTooLarge,
)
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import DerivedRecord, ImageId, OriginalStatus, Size
from pymager_tx.core.records import DerivedLookup
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions
from pymager_tx.ports import IEpoch, LocalEpoch, Offload, immediate
from tests.conftest import derivations
from tests.fakes import InterceptedBlobs, ManualOffload
from tests.images import (
    BLUE,
    FIXTURES,
    RED,
    close_to,
    derive,
    encode,
    jpeg,
    opened,
    png,
    png_declaring,
    psnr,
    solid,
)
from tests.results import failure_of, no_result, result_of
from tests.service_calls import derived_body, original_body

T = TypeVar("T")
POLICY = ImagePolicy(
    allowed_sizes=frozenset({Size(100, 100), Size(800, 600), Size(20, 10)}),
    max_upload_bytes=1_000_000,
    limits=DecodeLimits(max_pixels=4_000_000, decoders=default_decoders()),
    encoding=EncodeOptions(jpeg_quality=85),
)
PHOTO = ImageId("photo")


def run(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    return Deferred.fromCoroutine(coroutine)


def make_service(
    database: Database, blobs: FilesystemBlobStore, imaging: Offload = immediate
) -> ImageService:
    return ImageService(database, blobs, imaging, POLICY)


@pytest.fixture
def service(database: Database, blobs: FilesystemBlobStore) -> ImageService:
    return make_service(database, blobs)


def files(blobs: FilesystemBlobStore) -> list[str]:
    return sorted(str(p.relative_to(blobs.root)) for p in blobs.root.rglob("*") if p.is_file())


def stored_with_held_imaging(
    database: Database, blobs: FilesystemBlobStore
) -> tuple[ImageService, ManualOffload]:
    """A service holding PHOTO, whose image work waits until the test runs it."""
    imaging = ManualOffload()
    service = make_service(database, blobs, imaging)
    upload = run(service.store_original(PHOTO, jpeg((400, 300))))
    imaging.run_all()
    result_of(upload)
    return service, imaging


def derived(service: ImageService, name: str) -> StoredImage:
    return result_of(run(derived_body(service, name)))


class TestOriginals:
    def test_stores_the_bytes_as_uploaded_and_describes_them(self, service: ImageService) -> None:
        data = jpeg((80, 60))
        record = result_of(run(service.store_original(PHOTO, data)))
        assert (record.format, record.width, record.height, record.byte_length) == ("jpeg", 80, 60, len(data))
        assert record.status is OriginalStatus.READY
        fetched = result_of(run(original_body(service, PHOTO)))
        assert fetched.data == data
        assert fetched.record == record

    def test_a_lookup_reads_no_file(self, service: ImageService, blobs: FilesystemBlobStore) -> None:
        record = result_of(run(service.store_original(PHOTO, png())))
        result_of(blobs.delete(record.blob_key))
        found = result_of(run(service.original(PHOTO)))
        assert found.record == record
        failure_of(run(found.body())).trap(OriginalLost)

    def test_an_id_is_taken_once(self, service: ImageService) -> None:
        result_of(run(service.store_original(PHOTO, png())))
        failure_of(run(service.store_original(PHOTO, jpeg()))).trap(ImageIdTaken)

    def test_an_id_claimed_by_an_unfinished_upload_is_taken(
        self, service: ImageService, database: Database
    ) -> None:
        imaging = ManualOffload()
        racing = make_service(database, service._blobs, imaging)  # type: ignore[arg-type]
        first = run(racing.store_original(PHOTO, png()))
        second = run(racing.store_original(PHOTO, png()))
        imaging.run_all()
        outcomes = sorted(type(outcome).__name__ for outcome in _settle(first, second))
        assert outcomes == ["Failure", "OriginalRecord"]

    def test_an_upload_finishing_while_another_finds_it_abandoned_is_kept(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        transactions = ManualOffload()
        service = ImageService(Database(database.engine, transactions), blobs, immediate, POLICY)
        first_data = jpeg((80, 60), RED)
        first = run(service.store_original(PHOTO, first_data))
        transactions.run_one()  # first: the ID is free
        transactions.run_one()  # first claims it; it stores its file, then marks it ready...
        second = run(service.store_original(PHOTO, jpeg((80, 60), BLUE)))
        answer_the_row = transactions.run_held(1)  # ... meanwhile second reads the pending row,
        transactions.run_one()  # first finishes,
        assert result_of(first).status is OriginalStatus.READY
        answer_the_row()  # and second hears what it read: pending, and nobody uploading it.
        transactions.run_all()
        failure_of(second).trap(ImageIdTaken)
        fetched = result_of(run(original_body(make_service(database, blobs), PHOTO)))
        assert fetched.data == first_data

    def test_a_second_upload_never_clears_the_row_a_first_one_has_just_claimed(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        transactions = ManualOffload()
        service = ImageService(Database(database.engine, transactions), blobs, immediate, POLICY)
        first_data = jpeg((80, 60), RED)
        first = run(service.store_original(PHOTO, first_data))
        transactions.run_one()  # first: the ID is free
        claimed = transactions.run_held()  # first's pending row commits; first has not heard yet
        second = run(service.store_original(PHOTO, jpeg((80, 60), BLUE)))
        transactions.run_all()  # second finds the pending row: it is first's, under way
        claimed()
        transactions.run_all()
        failure_of(second).trap(ImageIdTaken)
        assert result_of(first).status is OriginalStatus.READY
        fetched = result_of(run(original_body(make_service(database, blobs), PHOTO)))
        assert fetched.data == first_data

    @pytest.mark.parametrize(
        ("data", "error"),
        [
            (b"", InvalidImage),
            (b"just some text", InvalidImage),
            (jpeg((200, 200))[:300], InvalidImage),
            (png_declaring(5000, 5000), TooManyPixels),
            (b"x" * 1_000_001, UploadTooLarge),
        ],
    )
    def test_refused_uploads_leave_nothing_behind(
        self,
        service: ImageService,
        database: Database,
        blobs: FilesystemBlobStore,
        data: bytes,
        error: type[Exception],
    ) -> None:
        failure_of(run(service.store_original(PHOTO, data))).trap(error)
        assert result_of(database.read(status_of_txn, "photo")) is None
        assert files(blobs) == []

    def test_a_failed_file_write_releases_the_id(
        self, service: ImageService, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        (blobs.root / "originals").write_bytes(b"a file where a directory must go")
        failure_of(run(service.store_original(PHOTO, png()))).trap(StorageUnavailable)
        assert result_of(database.read(status_of_txn, "photo")) is None

    def test_unknown_original(self, service: ImageService) -> None:
        failure_of(run(original_body(service, PHOTO))).trap(ImageNotFound)
        failure_of(run(service.delete_original(PHOTO))).trap(ImageNotFound)

    def test_delete_removes_the_original_its_derived_images_and_their_files(
        self, service: ImageService, blobs: FilesystemBlobStore
    ) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((300, 200)))))
        derived(service, "photo-100x100.jpg")
        derived(service, "photo-800x600.png")
        assert len(files(blobs)) == 3
        result_of(run(service.delete_original(PHOTO)))
        failure_of(run(original_body(service, PHOTO))).trap(ImageNotFound)
        failure_of(run(derived_body(service, "photo-100x100.jpg"))).trap(ImageNotFound)
        assert files(blobs) == []

    def test_a_new_upload_under_a_deleted_id_never_gets_old_derived_images(
        self, service: ImageService, log_events: list[LogEvent]
    ) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((100, 100), RED))))
        assert close_to(opened(derived(service, "photo-20x10.png").data or b"").getpixel((5, 5)), RED)
        result_of(run(service.delete_original(PHOTO)))
        result_of(run(service.store_original(PHOTO, jpeg((100, 100), BLUE))))
        assert close_to(opened(derived(service, "photo-20x10.png").data or b"").getpixel((5, 5)), BLUE)
        assert derivations(log_events) == ["photo-20x10.png", "photo-20x10.png"]


class TestDerivedRequests:
    @pytest.mark.parametrize(
        ("name", "error"),
        [
            ("photo.jpg", DerivedNameInvalid),
            ("photo-100x100", DerivedNameInvalid),
            ("photo-100x100.jpg.png", DerivedNameInvalid),
            ("photo-00x100.jpg", DerivedNameInvalid),
            ("pho.to-100x100.jpg", DerivedNameInvalid),
            # The format is checked before the size, as the original did.
            ("photo-123x45.xyz", UnsupportedOutputFormat),
            ("photo-0x0.xyz", UnsupportedOutputFormat),
            # 0x0 is never a size; a side of 0 is, if listed.
            ("photo-0x0.jpg", SizeOutOfBounds),
            ("photo-0x100.jpg", SizeNotAllowed),
            ("photo-123x45.jpg", SizeNotAllowed),
        ],
    )
    def test_are_checked_in_the_original_order(
        self, service: ImageService, name: str, error: type[Exception]
    ) -> None:
        # Refused before the ID is looked up: PHOTO is not stored.
        failure_of(run(service.derived(name))).trap(error)

    def test_extensions_are_case_insensitive_and_jpg_is_jpeg(self, service: ImageService) -> None:
        result_of(run(service.store_original(ImageId("a-b"), jpeg((400, 300)))))
        upper = result_of(run(service.derived("a-b-100x100.JPG"))).record
        assert result_of(run(service.derived("a-b-100x100.jpeg"))).record == upper
        assert upper.image_id == "a-b"

    def test_unknown_original(self, service: ImageService) -> None:
        failure_of(run(derived_body(service, "nobody-100x100.jpg"))).trap(ImageNotFound)


class TestDerivation:
    def test_derives_once_then_serves_from_storage(
        self, service: ImageService, log_events: list[LogEvent]
    ) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        first = derived(service, "photo-100x100.jpg")
        second = derived(service, "photo-100x100.jpeg")
        assert first.data == second.data
        assert opened(first.data or b"").size == (100, 100)
        assert derivations(log_events) == ["photo-100x100.jpeg"]

    def test_concurrent_first_requests_share_one_derivation(
        self, database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        service, imaging = stored_with_held_imaging(database, blobs)
        waiters = [run(derived_body(service, "photo-100x100.jpg")) for _ in range(10)]
        assert imaging.calls == 2  # the upload's probe, and one render
        for waiter in waiters:
            no_result(waiter)
        imaging.run_all()
        bodies = {result_of(waiter).data for waiter in waiters}
        assert len(bodies) == 1
        assert derivations(log_events) == ["photo-100x100.jpeg"]

    def test_a_client_leaving_does_not_cancel_the_derivation_for_others(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        service, imaging = stored_with_held_imaging(database, blobs)
        leaving = run(derived_body(service, "photo-100x100.jpg"))
        staying = run(derived_body(service, "photo-100x100.jpg"))
        leaving.cancel()
        failure_of(leaving).trap(CancelledError)
        imaging.run_all()
        assert opened(result_of(staying).data or b"").size == (100, 100)

    def test_an_original_deleted_during_its_derivation_leaves_no_derived_file(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        service, imaging = stored_with_held_imaging(database, blobs)
        waiter = run(derived_body(service, "photo-100x100.jpg"))
        result_of(run(service.delete_original(PHOTO)))
        imaging.run_all()
        failure_of(waiter).trap(ImageNotFound)
        assert files(blobs) == []

    def test_a_lost_derived_file_is_derived_again(
        self, service: ImageService, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        derived(service, "photo-100x100.jpg")
        for path in (blobs.root / "derived").rglob("100x100.jpeg.*"):
            path.unlink()
        assert opened(derived(service, "photo-100x100.jpg").data or b"").size == (100, 100)
        assert len(derivations(log_events)) == 2

    def test_metadata_only_reads_no_file(self, service: ImageService, blobs: FilesystemBlobStore) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        full = derived(service, "photo-100x100.jpg")
        assert isinstance(full.record, DerivedRecord)
        result_of(blobs.delete(full.record.blob_key))
        # Read, the lost file would be derived again, under a new record.
        found = result_of(run(service.derived("photo-100x100.jpg")))
        assert found.record == full.record


class TestRecovery:
    def test_finishes_an_interrupted_upload(
        self, service: ImageService, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        # The state a crash leaves between storing the file and marking it ready.
        from tests.db.test_repository import pending

        record = pending("photo", "0123abcd")
        record = type(record)(**{**record.__dict__, "blob_key": original_key(PHOTO, "0123abcd")})
        result_of(database.transact(claim_original_txn, record, "crashed-owner"))
        result_of(blobs.put(record.blob_key, png()))
        (blobs.root / ".tmp" / "put-half-written").write_bytes(b"half")
        result_of(run(service.recover()))
        assert files(blobs) == []
        result_of(run(service.store_original(PHOTO, png())))

    def test_finishes_an_interrupted_deletion(
        self, service: ImageService, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        from pymager_tx.adapters.sql.originals_txn import begin_removal_txn

        result_of(run(service.store_original(PHOTO, jpeg((300, 200)))))
        derived(service, "photo-100x100.jpg")
        result_of(database.transact(begin_removal_txn, "photo", service._clock()))
        result_of(run(service.recover()))
        assert files(blobs) == []
        assert result_of(database.read(status_of_txn, "photo")) is None

    def test_a_deletion_that_failed_half_way_does_not_strand_the_id(
        self, service: ImageService, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        from pymager_tx.adapters.sql.originals_txn import begin_removal_txn

        for attempt in ("delete again", "upload again"):
            result_of(run(service.store_original(PHOTO, jpeg((300, 200)))))
            derived(service, "photo-100x100.jpg")
            # The state a failed removal leaves: marked, files still there.
            result_of(database.transact(begin_removal_txn, "photo", service._clock()))
            failure_of(run(original_body(service, PHOTO))).trap(ImageNotFound)
            if attempt == "delete again":
                result_of(run(service.delete_original(PHOTO)))
                assert files(blobs) == []
            else:
                result_of(run(service.store_original(PHOTO, png())))
                assert len(files(blobs)) == 1
                result_of(run(service.delete_original(PHOTO)))

    def test_keeps_what_is_complete(self, service: ImageService, blobs: FilesystemBlobStore) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((300, 200)))))
        derived(service, "photo-100x100.jpg")
        before = files(blobs)
        result_of(run(service.recover()))
        assert files(blobs) == before
        assert derived(service, "photo-100x100.jpg").data


def _settle(*deferreds: Deferred[Any]) -> list[object]:
    outcomes: list[object] = []
    for deferred in deferreds:
        deferred.addBoth(outcomes.append)
    return outcomes


class TestWorkingCopy:
    """A large original is decoded in full once; later sizes come from a
    reduced copy of it, as good as from the original."""

    SMALL_SIZES = ImagePolicy(
        allowed_sizes=frozenset({Size(100, 100), Size(150, 100), Size(60, 60)}),
        max_upload_bytes=5_000_000,
        limits=POLICY.limits,
        encoding=POLICY.encoding,
    )

    @pytest.fixture
    def service(self, database: Database, blobs: FilesystemBlobStore) -> ImageService:
        return ImageService(database, blobs, immediate, self.SMALL_SIZES)

    @staticmethod
    def photo() -> bytes:
        # A real photograph, enlarged so that a working copy is worth making.
        with opened((FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes()) as image:
            return encode(image.resize((1600, 1200)), "JPEG", quality=92)

    @staticmethod
    def sources(events: list[LogEvent]) -> list[tuple[str, str]]:
        return [(event["derived_id"], event["source"]) for event in events if "derived_id" in event]

    def test_the_first_derivation_makes_it_and_later_ones_use_it(
        self, service: ImageService, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        data = self.photo()
        result_of(run(service.store_original(PHOTO, data)))
        first = derived(service, "photo-100x100.jpg")
        second = derived(service, "photo-150x100.png")
        assert self.sources(log_events) == [
            ("photo-100x100.jpeg", "working copy"),
            ("photo-150x100.png", "working copy"),
        ]
        assert len([event for event in log_events if "Made the working copy" in event["log_format"]]) == 1
        # As good as deriving from the original.
        from_original = derive(data, 150, 100, "png")
        assert psnr(opened(second.data), from_original) >= 35  # type: ignore[arg-type]
        assert opened(first.data).size == (100, 100)  # type: ignore[arg-type]
        # It goes with its original.
        result_of(run(service.delete_original(PHOTO)))
        assert files(blobs) == []

    def test_later_sizes_find_it_without_asking_the_database(
        self,
        service: ImageService,
        database: Database,
        log_events: list[LogEvent],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        asked: list[str] = []
        lookup = database.lookup_derived

        def counted(image_id: str, variant: str) -> Deferred[DerivedLookup]:
            asked.append(variant)
            return lookup(image_id, variant)

        monkeypatch.setattr(database, "lookup_derived", counted)
        result_of(run(service.store_original(PHOTO, self.photo())))
        for name in ("photo-100x100.jpg", "photo-150x100.jpg", "photo-60x60.jpg"):
            derived(service, name)
        working = [variant for variant in asked if variant.startswith("working")]
        assert working == [working[0]]  # asked once, before it was made
        assert [source for _, source in self.sources(log_events)] == ["working copy"] * 3

    def test_a_lost_one_is_made_again(
        self, service: ImageService, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        result_of(run(service.store_original(PHOTO, self.photo())))
        derived(service, "photo-100x100.jpg")
        (copy,) = [key for key in files(blobs) if "/working" in key]
        result_of(blobs.delete(copy))
        derived(service, "photo-150x100.jpg")  # from the original, and forgotten
        derived(service, "photo-60x60.jpg")  # from a new working copy
        formats = [event["log_format"] for event in log_events]
        assert len([text for text in formats if "working copy of {image_id} is missing" in text]) == 1
        assert len([text for text in formats if "Made the working copy" in text]) == 2
        assert len([key for key in files(blobs) if "/working" in key]) == 1

    def test_a_small_original_is_its_own_source(
        self, service: ImageService, log_events: list[LogEvent]
    ) -> None:
        result_of(run(service.store_original(PHOTO, jpeg((200, 150)))))
        derived(service, "photo-60x60.jpg")
        assert self.sources(log_events) == [("photo-60x60.jpeg", "original")]

    def test_an_animation_is_derived_from_the_original(
        self, service: ImageService, log_events: list[LogEvent]
    ) -> None:
        frames = [solid((1200, 900), color) for color in (RED, BLUE, RED)]
        buffer = BytesIO()
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
        result_of(run(service.store_original(PHOTO, buffer.getvalue())))
        result = derived(service, "photo-60x60.gif")
        assert self.sources(log_events) == [("photo-60x60.gif", "original")]
        assert getattr(opened(result.data), "n_frames", 1) == 3  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_read_of_the_source_is_not_the_images_cost(
    database: Database, blobs: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time budget counts from the request's arrival, and time spent
    waiting for the source's bytes is the server's: running out of it then
    is Overloaded (503, try again), never the image's refusal."""
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    policy = replace(POLICY, limits=replace(POLICY.limits, time_budget=0.3))

    class SlowReads(InterceptedBlobs):
        def get(self, key: str) -> Deferred[bytes]:
            clock.now += 0.4  # longer than the whole budget
            return super().get(key)

    service = ImageService(database, SlowReads(blobs), immediate, policy)
    result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
    failure_of(run(derived_body(service, "photo-100x100.jpg", clock.now))).trap(Overloaded)


class TestRefusedDerivations:
    """A derivation refused for its source is answered at once for a while."""

    def test_are_remembered_per_upload_for_a_while(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        # A time budget no derivation can meet: every render is refused.
        policy = replace(POLICY, limits=replace(POLICY.limits, time_budget=1e-9))
        imaging, clock = ManualOffload(), Clock()
        service = ImageService(database, blobs, imaging, policy, refusals=RecentRefusals(60, clock=clock))

        def attempt() -> Deferred[StoredImage]:
            attempt = run(derived_body(service, "photo-100x100.jpg"))
            imaging.run_all()
            return attempt

        upload = run(service.store_original(PHOTO, jpeg((400, 300))))
        imaging.run_all()
        result_of(upload)
        failure_of(attempt()).trap(DerivationTooCostly)
        renders = imaging.calls
        failure_of(attempt()).trap(DerivationTooCostly)
        assert imaging.calls == renders  # refused again without rendering
        clock.now = 61
        failure_of(attempt()).trap(DerivationTooCostly)
        assert imaging.calls == renders + 1  # forgotten: tried once more
        # A new upload under the ID is another source: tried afresh.
        result_of(run(service.delete_original(PHOTO)))
        upload = run(service.store_original(PHOTO, jpeg((400, 300))))
        imaging.run_all()
        result_of(upload)
        calls = imaging.calls
        failure_of(attempt()).trap(DerivationTooCostly)
        assert imaging.calls == calls + 1

    def test_unavailable_storage_is_not_remembered(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        service = make_service(database, blobs)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        blocker = blobs.root / "derived"
        blocker.write_bytes(b"a file where a directory must go")
        failure_of(run(derived_body(service, "photo-100x100.jpg"))).trap(StorageUnavailable)
        blocker.unlink()
        assert opened(derived(service, "photo-100x100.jpg").data or b"").size == (100, 100)


class TestRecentRefusals:
    def test_bounded_oldest_out_first(self) -> None:
        refusals = RecentRefusals(60, max_entries=2)
        for key in "abc":
            refusals.remember(key, InvalidImage(key))
        assert len(refusals) == 2
        assert refusals.recall("a") is None
        recalled = refusals.recall("c")
        assert isinstance(recalled, InvalidImage) and recalled.detail == "c"

    def test_zero_seconds_remembers_nothing(self) -> None:
        refusals = RecentRefusals(0)
        refusals.remember("a", InvalidImage("a"))
        assert refusals.recall("a") is None


class TestDerivedInMemory:
    """Popular renditions come from memory, but never outlive a delete seen
    by the database: at once on this machine, at the next poll from
    elsewhere."""

    def cached_service(
        self, database: Database, blobs: FilesystemBlobStore, epoch: IEpoch, clock: Clock
    ) -> ImageService:
        cache = RenditionCache(
            max_bytes=10_000_000, max_item_bytes=1_000_000, poll_seconds=1.0, epoch=epoch, clock=clock
        )
        service = ImageService(database, blobs, immediate, POLICY, cache=cache)
        result_of(run(service.poll_removals()))
        return service

    def test_a_served_rendition_needs_neither_its_file_nor_its_row_while_nothing_is_deleted(
        self, database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        clock = Clock()
        service = self.cached_service(database, blobs, LocalEpoch(), clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        first = derived(service, "photo-100x100.jpg")
        assert isinstance(first.record, DerivedRecord)
        result_of(blobs.delete(first.record.blob_key))
        result_of(database.transact(forget_derived_txn, first.record))
        for _ in range(5):
            clock.now += 1.0
            result_of(run(service.poll_removals()))
            assert derived(service, "photo-100x100.jpg") == first
        assert derivations(log_events) == ["photo-100x100.jpeg"]
        # Once the polls stop, the database is asked: it no longer knows the
        # rendition, so it is derived again.
        clock.now += 3.0
        again = derived(service, "photo-100x100.jpg")
        assert derivations(log_events) == ["photo-100x100.jpeg"] * 2
        assert again.record != first.record

    def test_a_check_finding_the_same_row_does_not_read_the_file(
        self, database: Database, blobs: FilesystemBlobStore, log_events: list[LogEvent]
    ) -> None:
        clock = Clock()
        service = self.cached_service(database, blobs, LocalEpoch(), clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        # As a GET does it: the metadata first, then the bytes.
        found = result_of(run(service.derived("photo-100x100.jpg")))
        first = result_of(run(found.body()))
        assert isinstance(first.record, DerivedRecord)
        result_of(blobs.delete(first.record.blob_key))
        clock.now += 5.0  # no poll: every request asks the database
        assert derived(service, "photo-100x100.jpg").data == first.data
        assert derivations(log_events) == ["photo-100x100.jpeg"]

    def test_a_delete_here_is_seen_at_once(self, database: Database, blobs: FilesystemBlobStore) -> None:
        service = self.cached_service(database, blobs, LocalEpoch(), Clock())
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        derived(service, "photo-100x100.jpg")
        result_of(run(service.delete_original(PHOTO)))
        failure_of(run(derived_body(service, "photo-100x100.jpg"))).trap(ImageNotFound)

    def test_a_delete_by_another_process_on_this_machine_is_seen_at_once(
        self, database: Database, blobs: FilesystemBlobStore, tmp_path: Path
    ) -> None:
        # Two processes: each maps the epoch file of the shared data directory.
        mine, theirs = SharedEpoch.of(tmp_path), SharedEpoch.of(tmp_path)
        mine.open()
        theirs.open()
        try:
            clock = Clock()
            service = self.cached_service(database, blobs, mine, clock)
            other = self.cached_service(database, blobs, theirs, clock)
            result_of(run(other.store_original(PHOTO, jpeg((400, 300), color=RED))))
            assert close_to(opened(derived(service, "photo-100x100.png").data).getpixel((50, 50)), RED)
            result_of(run(other.delete_original(PHOTO)))
            failure_of(run(derived_body(service, "photo-100x100.png"))).trap(ImageNotFound)
            # And a new upload under the ID is what the next request gets.
            result_of(run(other.store_original(PHOTO, jpeg((400, 300), color=BLUE))))
            assert close_to(opened(derived(service, "photo-100x100.png").data).getpixel((50, 50)), BLUE)
        finally:
            mine.close()
            theirs.close()

    def test_a_delete_on_another_machine_is_seen_at_the_next_poll(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        clock = Clock()
        service = self.cached_service(database, blobs, LocalEpoch(), clock)
        elsewhere = self.cached_service(database, blobs, LocalEpoch(), clock)
        result_of(run(service.store_original(PHOTO, jpeg((400, 300)))))
        derived(service, "photo-100x100.jpg")
        result_of(run(elsewhere.delete_original(PHOTO)))
        assert derived(service, "photo-100x100.jpg").data is not None  # until the poll
        result_of(run(service.poll_removals()))
        failure_of(run(derived_body(service, "photo-100x100.jpg"))).trap(ImageNotFound)
