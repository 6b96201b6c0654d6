"""Admission control: a bounded queue in front of the image threads, whose
waiters hold no image bytes, give up at their deadline, and leave when
their clients do."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.renditions_txn import claims_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.api import StoredImage
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.core.errors import Overloaded
from pymager_tx.core.model import ImageId
from pymager_tx.ports import immediate
from tests.fakes import CountedGets, ManualOffload
from tests.images import jpeg, opened
from tests.results import failure_of, no_result, result_of
from tests.service_calls import derived_body
from tests.unit.test_service import POLICY, run

T = TypeVar("T")


def held() -> tuple[list[Deferred[str]], object]:
    started: list[Deferred[str]] = []

    def work() -> Deferred[str]:
        started.append(Deferred())
        return started[-1]

    return started, work


class TestImageAdmission:
    def test_work_past_the_queue_is_refused_at_once(self) -> None:
        admission = ImageAdmission(slots=1, max_queue=1, clock=Clock())
        started, work = held()
        first = run(admission.run(work))  # type: ignore[arg-type]
        second = run(admission.run(work))  # type: ignore[arg-type]
        assert (len(started), admission.busy, admission.waiting, admission.full) == (1, 1, 1, True)
        failure_of(run(admission.run(work))).trap(Overloaded)  # type: ignore[arg-type]
        started[0].callback("done")
        assert result_of(first) == "done"
        assert len(started) == 2 and not admission.full
        started[1].callback("done too")
        assert result_of(second) == "done too"
        assert admission.busy == 0

    def test_a_waiter_gives_up_at_its_deadline(self) -> None:
        clock = Clock()
        admission = ImageAdmission(slots=1, max_queue=5, clock=clock)
        started, work = held()
        run(admission.run(work))  # type: ignore[arg-type]
        waiting = run(admission.run(work, wait_at_most=2.0))  # type: ignore[arg-type]
        clock.advance(1.9)
        no_result(waiting)
        clock.advance(0.2)
        failure_of(waiting).trap(Overloaded)
        assert admission.waiting == 0
        started[0].callback("done")
        assert len(started) == 1, "the waiter that gave up never ran"

    def test_a_deserted_waiter_leaves_the_queue(self) -> None:
        admission = ImageAdmission(slots=1, max_queue=5, clock=Clock())
        started, work = held()
        run(admission.run(work))  # type: ignore[arg-type]
        deserted: Deferred[None] = Deferred()
        waiting = run(admission.run(work, deserted=deserted))  # type: ignore[arg-type]
        deserted.callback(None)
        failure_of(waiting).trap(CancelledError)
        assert admission.waiting == 0
        started[0].callback("done")
        assert len(started) == 1

    def test_a_ticket_holds_a_place_until_released(self) -> None:
        admission = ImageAdmission(slots=1, max_queue=1, clock=Clock())
        first, second = admission.reserve(), admission.reserve()
        # Accepted work on its way to the queue counts as queued.
        assert (admission.busy, admission.waiting, admission.full) == (0, 2, True)
        with pytest.raises(Overloaded):
            admission.reserve()
        second.release()
        second.release()
        assert (admission.waiting, admission.full) == (1, False)
        first.release()
        assert admission.waiting == 0

    def test_work_with_a_ticket_keeps_its_place_between_its_steps(self) -> None:
        admission = ImageAdmission(slots=1, max_queue=0, clock=Clock())
        started, work = held()
        ticket = admission.reserve()
        step = run(admission.run(work, ticket=ticket))  # type: ignore[arg-type]
        assert (admission.busy, admission.waiting) == (1, 0)
        started[0].callback("working copy")
        assert result_of(step) == "working copy"
        # Between its steps the place is still its own: new work is refused,
        # and its next step is not.
        assert admission.full
        with pytest.raises(Overloaded):
            admission.reserve()
        step = run(admission.run(work, ticket=ticket))  # type: ignore[arg-type]
        started[1].callback("rendition")
        assert result_of(step) == "rendition"
        ticket.release()
        assert (admission.busy, admission.waiting, admission.full) == (0, 0, False)


@pytest.fixture
def blobs(tmp_path: Path) -> CountedGets:
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    return CountedGets(store)


class _Counted:
    """An offload that counts the transactions it runs at once."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        self.calls += 1
        return immediate(work, *args, **kwargs)


def busy_service(
    database: Database, blobs: CountedGets, policy: ImagePolicy = POLICY
) -> tuple[ImageService, ManualOffload, Clock]:
    """A service with one image thread and room for one job in its queue,
    holding three originals, whose image work waits until the test runs it."""
    imaging, clock = ManualOffload(), Clock()
    admission = ImageAdmission(slots=1, max_queue=1, clock=clock)
    service = ImageService(database, blobs, imaging, policy, admission=admission)
    for name in ("one", "two", "three"):
        upload = run(service.store_original(ImageId(name), jpeg((400, 300))))
        imaging.run_all()
        result_of(upload)
    blobs.gets.clear()
    return service, imaging, clock


def ask(service: ImageService, name: str, arrived: float | None = None) -> Deferred[StoredImage]:
    return run(derived_body(service, name, arrived=arrived))


def test_queued_derivations_hold_no_image_bytes_and_the_queue_is_bounded(
    database: Database, blobs: CountedGets
) -> None:
    service, imaging, _clock = busy_service(database, blobs)
    admission = service._work.admission
    first = ask(service, "one-100x100.jpg")
    assert len(blobs.gets) == 1, "the first has a thread: it read its original"
    second = ask(service, "two-100x100.jpg")
    assert len(blobs.gets) == 1, "the second waits for a thread without reading anything"
    transactions = _Counted()
    counted = ImageService(
        Database(database.engine, transactions), blobs, imaging, POLICY, admission=admission
    )
    failure_of(ask(counted, "three-100x100.jpg")).trap(Overloaded)
    # Refused before it claimed anything: one lookup is all it cost.
    assert transactions.calls == 1
    assert service.image_load() == {"threads": 1, "busy": 1, "queued": 1, "max_queue": 1, "full": True}
    imaging.run_all()
    assert opened(result_of(first).data).size == (100, 100)  # type: ignore[arg-type]
    imaging.run_all()
    assert opened(result_of(second).data).size == (100, 100)  # type: ignore[arg-type]
    # A refusal for load is not the image's fault: asked again, it is derived.
    third = ask(service, "three-100x100.jpg")
    imaging.run_all()
    assert opened(result_of(third).data).size == (100, 100)  # type: ignore[arg-type]


def test_new_work_past_the_queue_is_refused_after_one_lookup_even_before_any_is_queued(
    database: Database, blobs: CountedGets
) -> None:
    service, imaging, _clock = busy_service(database, blobs)
    admission = service._work.admission
    transactions = ManualOffload()
    burst = ImageService(Database(database.engine, transactions), blobs, imaging, POLICY, admission=admission)
    first = ask(burst, "one-100x100.jpg")
    transactions.run_one()  # its lookup: new work, which claims next
    second = ask(burst, "two-100x100.jpg")
    transactions.run_one(-1)  # its lookup too
    # Both claims are still on their way: neither waits for a thread yet.
    assert admission is not None and admission.busy == 0
    third = ask(burst, "three-100x100.jpg")
    transactions.run_one(-1)
    failure_of(third).trap(Overloaded)
    # Refused after its lookup: no claim taken, nor released.
    assert transactions.calls == 5
    while transactions.pending or imaging.pending:
        transactions.run_all()
        imaging.run_all()
    assert opened(result_of(first).data).size == (100, 100)  # type: ignore[arg-type]
    assert opened(result_of(second).data).size == (100, 100)  # type: ignore[arg-type]
    assert service.image_load() == {"threads": 1, "busy": 0, "queued": 0, "max_queue": 1, "full": False}


def test_a_client_leaving_while_queued_takes_its_work_out_of_the_queue(
    database: Database, blobs: CountedGets
) -> None:
    service, imaging, _clock = busy_service(database, blobs)
    first = ask(service, "one-100x100.jpg")
    leaving = ask(service, "two-100x100.jpg")
    leaving.cancel()
    failure_of(leaving).trap(CancelledError)
    assert service.image_load()["queued"] == 0  # type: ignore[index]
    imaging.run_all()
    result_of(first)
    assert imaging.calls == 4, "three probes and one rendering: the deserted one never ran"
    assert blobs.gets == [blobs.gets[0]]
    assert result_of(database.read(claims_txn)) == []


def test_the_time_budget_counts_from_the_requests_arrival(database: Database, blobs: CountedGets) -> None:
    budget = 20.0
    policy = replace(POLICY, limits=replace(POLICY.limits, time_budget=budget))
    service, imaging, _clock = busy_service(database, blobs, policy)
    # It arrived a whole budget ago (it waited that long for the server):
    # there is no time left to derive it, and that is no fault of the image.
    late = ask(service, "one-100x100.jpg", arrived=time.monotonic() - budget)
    imaging.run_all()
    failure_of(late).trap(Overloaded)
    again = ask(service, "one-100x100.jpg", arrived=time.monotonic())
    imaging.run_all()
    assert opened(result_of(again).data).size == (100, 100)  # type: ignore[arg-type]


def test_without_admission_work_goes_straight_to_the_threads(database: Database, blobs: CountedGets) -> None:
    service = ImageService(database, blobs, immediate, POLICY)
    assert service.image_load() is None
    result_of(run(service.store_original(ImageId("one"), jpeg((40, 30)))))
    assert result_of(ask(service, "one-100x100.jpg")).record.width == 100
