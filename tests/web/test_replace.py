"""Replacing an original (PUT with If-Match) over HTTP, on the real service
in memory: a new generation in one step, the old renditions gone, every
cache voided; stale and missing preconditions 412; crashes between the
steps leave the old original or the new one, and recovery clears the rest."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.renditions_txn import claims_txn
from pymager_tx.adapters.sql.replace_txn import claim_replacement_txn, swap_original_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.consistency import check
from pymager_tx.app.peers import Peers
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImageService
from pymager_tx.app.values import REPLACEMENT
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import ImageId, OriginalRecord, OriginalStatus
from pymager_tx.core.records import Claim, Swapped
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import Offload, immediate
from tests.fakes import InterceptedBlobs, ManualOffload
from tests.images import BLUE, RED, close_to, jpeg, mean_colour, opened
from tests.results import result_of
from tests.web.test_api import POLICY, Client, assert_problem, header

OLD = jpeg((200, 150), RED)
NEW = jpeg((300, 200), BLUE)


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def make_service(
    database: Database,
    blobs: FilesystemBlobStore,
    imaging: Offload = immediate,
    cache: RenditionCache | None = None,
    peers: Peers | None = None,
) -> ImageService:
    return ImageService(database, blobs, imaging, POLICY, cache=cache, peers=peers)


def client_of(service: ImageService) -> Client:
    return Client(ImageAPI(service, WriteTokens(()), immediate, HttpPolicy()))


@pytest.fixture
def service(database: Database, blobs: FilesystemBlobStore) -> ImageService:
    return make_service(database, blobs)


@pytest.fixture
def client(service: ImageService) -> Client:
    return client_of(service)


def files(blobs: FilesystemBlobStore) -> list[str]:
    return sorted(str(p.relative_to(blobs.root)) for p in blobs.root.rglob("*") if p.is_file())


def colour_of(response: Any) -> tuple[int, ...]:
    assert response.code == 200, response.body
    return mean_colour(opened(response.body))


def replace(client: Client, data: bytes, if_match: str, image_id: str = "photo") -> Any:
    return client.put(f"/original/{image_id}", data, **{"If-Match": if_match, "Content-Type": "image/jpeg"})


class TestReplace:
    def test_the_new_picture_is_served_and_the_old_renditions_are_gone(
        self, client: Client, blobs: FilesystemBlobStore
    ) -> None:
        assert client.put("/original/photo", OLD).code == 201
        assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), RED)
        read = client.request("GET", "/original/photo")
        response = replace(client, NEW, header(read, "ETag") or "")
        assert response.code == 200, response.body
        described = json.loads(response.body)
        assert described["id"] == "photo"
        assert (described["width"], described["height"], described["byte_length"]) == (300, 200, len(NEW))
        assert described["sha256"] == hashlib.sha256(NEW).hexdigest()
        assert header(response, "ETag") == etag_of(NEW)
        original = client.request("GET", "/original/photo")
        assert original.body == NEW
        assert header(original, "ETag") == etag_of(NEW)
        # Derived again, from the new pixels.
        assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), BLUE)
        # Nothing of the old generation is left: one original, one rendition.
        stored = files(blobs)
        assert len([key for key in stored if key.startswith("originals/")]) == 1
        assert len([key for key in stored if key.startswith("derived/")]) == 1

    def test_if_match_star_replaces_whatever_is_stored(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        assert replace(client, NEW, "*").code == 200
        assert client.request("GET", "/original/photo").body == NEW

    def test_any_of_several_etags_may_match(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        assert replace(client, NEW, f'"{"0" * 64}", {etag_of(OLD)}').code == 200

    @pytest.mark.parametrize("stale", [etag_of(NEW), f"W/{etag_of(OLD)}", "not-a-tag", '""'])
    def test_a_stale_or_weak_if_match_is_412_and_changes_nothing(
        self, client: Client, blobs: FilesystemBlobStore, stale: str
    ) -> None:
        client.put("/original/photo", OLD)
        before = files(blobs)
        response = replace(client, NEW, stale)
        assert assert_problem(response, 412)["type"] == "/problems/precondition-failed"
        assert client.request("GET", "/original/photo").body == OLD
        assert files(blobs) == before

    @pytest.mark.parametrize("condition", [etag_of(OLD), "*"])
    def test_if_match_on_a_missing_id_is_412(self, client: Client, condition: str) -> None:
        response = replace(client, NEW, condition, image_id="nobody")
        assert assert_problem(response, 412)["type"] == "/problems/precondition-failed"
        assert client.request("GET", "/original/nobody").code == 404

    def test_without_if_match_a_taken_id_stays_409(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        assert assert_problem(client.put("/original/photo", NEW), 409)["type"] == "/problems/id-taken"
        assert client.request("GET", "/original/photo").body == OLD

    def test_a_replacement_that_is_not_an_image_is_400_and_keeps_the_old_one(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        assert replace(client, b"not an image", etag_of(OLD)).code == 400
        assert client.request("GET", "/original/photo").body == OLD

    def test_a_second_replacement_with_the_first_etag_is_stale(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        assert replace(client, NEW, etag_of(OLD)).code == 200
        assert assert_problem(replace(client, jpeg((50, 50), RED), etag_of(OLD)), 412)
        assert client.request("GET", "/original/photo").body == NEW

    def test_the_metadata_is_the_new_pictures_and_the_focal_point_goes(self, client: Client) -> None:
        client.put("/original/photo", OLD)
        change = json.dumps({"focal_point": {"x": 0.2, "y": 0.8}}).encode()
        headers = {"Content-Type": "application/json"}
        assert client.request("PATCH", "/meta/photo", data=change, headers=headers).code == 200
        client.request("GET", "/derived/photo-100x100.jpg")
        before = json.loads(client.request("GET", "/meta/photo").body)
        assert before["focal_point"] == {"x": 0.2, "y": 0.8} and len(before["renditions"]) == 1
        assert replace(client, NEW, etag_of(OLD)).code == 200
        after = json.loads(client.request("GET", "/meta/photo").body)
        # A new picture: its own summary, no renditions yet, and the old focal
        # point, which pointed into the old picture, gone.
        assert (after["sha256"], after["width"], after["height"]) == (
            hashlib.sha256(NEW).hexdigest(),
            300,
            200,
        )
        assert after["focal_point"] is None and after["renditions"] == []
        assert after["blurhash"] and after["blurhash"] != before["blurhash"]
        assert after["dominant_color"] != before["dominant_color"]


class TestCaches:
    def test_renditions_held_in_memory_here_and_in_another_process_are_voided(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        def cached() -> RenditionCache:
            return RenditionCache(max_bytes=10_000_000, max_item_bytes=1_000_000, poll_seconds=3600)

        here = make_service(database, blobs, cache=cached())
        there = make_service(database, blobs, cache=cached())
        for service in (here, there):
            result_of(service.poll_removals())
        near, far = client_of(here), client_of(there)
        near.put("/original/photo", OLD)
        for client in (near, far):
            assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), RED)
        # Both now serve it from memory, without its file.
        for path in (blobs.root / "derived").rglob("*"):
            if path.is_file():
                path.unlink()
        for client in (near, far):
            assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), RED)
        assert replace(near, NEW, etag_of(OLD)).code == 200
        # Here at once; there at its next poll of the removal counter.
        assert close_to(colour_of(near.request("GET", "/derived/photo-100x100.jpg")), BLUE)
        result_of(there.poll_removals())
        assert close_to(colour_of(far.request("GET", "/derived/photo-100x100.jpg")), BLUE)


class TestRaces:
    def test_a_derivation_of_the_old_picture_finishing_after_the_swap_is_not_recorded_or_served(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        imaging = ManualOffload()
        service = make_service(database, blobs, imaging)
        client = client_of(service)
        upload = client.stub.request("PUT", "http://images.example.com/original/photo", data=OLD)
        imaging.run_all()
        client.stub.flush()
        assert result_of(upload).code == 201
        # A derivation of the old picture is under way, its rendering held.
        asked = client.stub.request("GET", "http://images.example.com/derived/photo-100x100.jpg")
        assert len(imaging.pending) == 1
        replacing = client.stub.request(
            "PUT", "http://images.example.com/original/photo", data=NEW, headers={"If-Match": etag_of(OLD)}
        )
        imaging.run_one(1)  # the replacement's description: it swaps now
        client.stub.flush()
        assert result_of(replacing).code == 200
        imaging.run_all()  # the old rendering finishes, is refused, and the new one is made
        while imaging.pending:
            imaging.run_all()
        client.stub.flush()
        answer = result_of(asked)
        assert answer.code == 200
        assert close_to(mean_colour(opened(result_of(client.stub.content(answer)))), BLUE)
        assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), BLUE)
        assert result_of(check(database, blobs, Peers.alone())).consistent

    def test_of_two_replacements_of_one_original_one_wins_and_the_other_is_412(
        self, database: Database, tmp_path: Path
    ) -> None:
        io = ManualOffload()
        blobs = FilesystemBlobStore(tmp_path / "held", io)
        preparing = blobs.recover()
        io.run_all()
        result_of(preparing)
        service = make_service(database, blobs)
        client = client_of(service)
        uploading = client.stub.request("PUT", "http://images.example.com/original/photo", data=OLD)
        io.run_all()
        client.stub.flush()
        assert result_of(uploading).code == 201
        first = client.stub.request(
            "PUT", "http://images.example.com/original/photo", data=NEW, headers={"If-Match": etag_of(OLD)}
        )
        assert io.pending  # the first holds the replacement, its file being written
        second = replace(client, jpeg((60, 40), RED), etag_of(OLD))
        assert assert_problem(second, 412, "under way")["type"] == "/problems/precondition-failed"
        while io.pending:
            io.run_all()
        client.stub.flush()
        assert result_of(first).code == 200
        assert replace(client, jpeg((60, 40), RED), etag_of(OLD)).code == 412  # stale now
        reading = client.stub.request("GET", "http://images.example.com/original/photo")
        while io.pending:
            io.run_all()
        client.stub.flush()
        assert result_of(client.stub.content(result_of(reading))) == NEW


class TestCrashes:
    """The states a crash leaves between the steps, made as a dead process
    would have left them."""

    def _claimed_and_stored(
        self, database: Database, blobs: FilesystemBlobStore, client: Client
    ) -> tuple[OriginalRecord, Claim]:
        client.put("/original/photo", OLD)
        assert client.request("GET", "/derived/photo-100x100.jpg").code == 200
        current = result_of(database.find_original("photo"))
        assert current is not None
        record = OriginalRecord(
            **{
                **current.__dict__,
                "generation": "feedface",
                "sha256": hashlib.sha256(NEW).hexdigest(),
                "byte_length": len(NEW),
                "blob_key": original_key(ImageId("photo"), "feedface"),
                "status": OriginalStatus.READY,
            }
        )
        claim = Claim("photo", REPLACEMENT, "feedface", "crashed-owner", "cafe")
        claimed = result_of(database.transact(claim_replacement_txn, claim, None, timedelta(seconds=30)))
        assert claimed == (True, claim)
        result_of(blobs.put(record.blob_key, NEW))
        return record, claim

    def test_a_crash_before_the_swap_leaves_the_old_original_and_recovery_removes_the_new_file(
        self, database: Database, blobs: FilesystemBlobStore, service: ImageService, client: Client
    ) -> None:
        record, _claim = self._claimed_and_stored(database, blobs, client)
        assert client.request("GET", "/original/photo").body == OLD
        assert not result_of(check(database, blobs, Peers.alone())).consistent
        result_of(service.recover())
        assert result_of(blobs.size(record.blob_key)) is None
        assert result_of(database.read(claims_txn)) == []
        assert result_of(check(database, blobs, Peers.alone())).consistent
        assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), RED)

    def test_a_replacement_after_a_crashed_one_settles_it_first(
        self, database: Database, blobs: FilesystemBlobStore, client: Client
    ) -> None:
        record, _claim = self._claimed_and_stored(database, blobs, client)
        assert replace(client, NEW, etag_of(OLD)).code == 200
        assert result_of(blobs.size(record.blob_key)) is None
        assert client.request("GET", "/original/photo").body == NEW
        assert result_of(check(database, blobs, Peers.alone())).consistent

    def test_a_crash_after_the_swap_leaves_the_new_original_and_recovery_removes_the_old_files(
        self, database: Database, blobs: FilesystemBlobStore, service: ImageService, client: Client
    ) -> None:
        record, claim = self._claimed_and_stored(database, blobs, client)
        old = result_of(database.find_original("photo"))
        assert old is not None
        swapped, removal = result_of(
            database.transact(swap_original_txn, record, None, claim, record.created_at)
        )
        assert swapped is Swapped.REPLACED and removal is not None
        assert removal.original.generation == old.generation and len(removal.derived_keys) == 1
        # The new one is served; its renditions are derived from it.
        assert client.request("GET", "/original/photo").body == NEW
        assert close_to(colour_of(client.request("GET", "/derived/photo-100x100.jpg")), BLUE)
        assert result_of(blobs.size(old.blob_key)) is not None
        result_of(service.recover())
        assert result_of(blobs.size(old.blob_key)) is None
        assert result_of(blobs.size(removal.derived_keys[0])) is None
        assert result_of(database.read(claims_txn)) == []
        assert result_of(check(database, blobs, Peers.alone())).consistent
        assert client.request("GET", "/original/photo").body == NEW

    def test_old_files_that_could_not_be_removed_are_left_to_recovery(
        self, database: Database, blobs: FilesystemBlobStore
    ) -> None:
        intercepted = InterceptedBlobs(blobs)
        service = ImageService(database, intercepted, immediate, POLICY)
        client = client_of(service)
        client.put("/original/photo", OLD)
        client.request("GET", "/derived/photo-100x100.jpg")
        old = result_of(database.find_original("photo"))
        assert old is not None
        intercepted.deletes_fail = True  # the storage fails as the old files go
        assert replace(client, NEW, etag_of(OLD)).code == 200  # acknowledged all the same
        assert client.request("GET", "/original/photo").body == NEW
        [claim] = result_of(database.read(claims_txn))
        assert (claim.variant, claim.generation) == (REPLACEMENT, old.generation)
        intercepted.deletes_fail = False
        # The next start (this process gone) finishes the removal.
        result_of(make_service(database, blobs).recover())
        assert result_of(blobs.size(old.blob_key)) is None
        assert result_of(database.read(claims_txn)) == []
        assert result_of(check(database, blobs, Peers.alone())).consistent
        assert client.request("GET", "/original/photo").body == NEW
