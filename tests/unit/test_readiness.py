"""Readiness is checked for real: a query, and a probe stored, read back and removed."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed

from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.readiness import check_ready, probe_key
from pymager_tx.core.errors import DatabaseUnavailable, StorageUnavailable
from tests.fakes import InterceptedBlobs
from tests.results import failure_of, result_of


class Pinged:
    def __init__(self, answers: bool = True) -> None:
        self.answers = answers
        self.pings = 0

    def ping(self) -> Deferred[None]:
        self.pings += 1
        if self.answers:
            return succeed(None)
        return fail(DatabaseUnavailable("the metadata database does not answer", "db.internal:5432 refused"))


def ready(database: Pinged, blobs: object) -> Deferred[None]:
    return Deferred.fromCoroutine(check_ready(database, blobs, "web-1-1234"))  # type: ignore[arg-type]


def test_a_ready_store_leaves_no_probe_behind() -> None:
    blobs = MemoryBlobStore()
    database = Pinged()
    result_of(ready(database, blobs))
    assert database.pings == 1
    assert blobs.blobs == {}


def test_a_database_that_does_not_answer_is_named() -> None:
    failure = failure_of(ready(Pinged(answers=False), MemoryBlobStore()))
    failure.trap(DatabaseUnavailable)


def test_a_store_that_cannot_remove_the_probe_is_named_without_paths() -> None:
    blobs = InterceptedBlobs(MemoryBlobStore())
    blobs.deletes_fail = True
    failure = failure_of(ready(Pinged(), blobs))
    failure.trap(StorageUnavailable)
    assert "storage" in failure.value.detail and "/" not in failure.value.detail


def test_a_store_that_loses_what_it_stored_is_not_ready() -> None:
    class Forgetful(MemoryBlobStore):
        def put(self, key: str, data: bytes) -> Deferred[None]:
            return succeed(None)

    failure_of(ready(Pinged(), Forgetful())).trap(StorageUnavailable)


def test_the_probe_is_no_image_key() -> None:
    key = probe_key("Web-1.example.com-1234")
    assert key.startswith("probes/")
    assert not key.startswith(("originals/", "derived/"))
