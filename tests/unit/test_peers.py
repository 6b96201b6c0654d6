"""Several processes on one database and one store, as several ImageService
instances with owners of their own, without threads.

Each "process" has its own blob store object on the shared root, its own
in-process deduplication, and its own view of which peers are alive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.originals_txn import (
    begin_removal_txn,
    claim_original_txn,
    find_original_txn,
    status_of_txn,
)
from pymager_tx.adapters.sql.renditions_txn import claim_derivation_txn, claims_txn
from pymager_tx.adapters.sql.schema import derivation_claims
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.peers import CLAIM_LEASE, POLL_MOST, Peers
from pymager_tx.app.service import ImageService, claimed_key
from pymager_tx.core.errors import DerivationPending, ImageIdTaken, ImageNotFound
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import ImageId, OriginalStatus
from pymager_tx.core.records import ClaimOutcome
from pymager_tx.ports import IBlobStore, Offload, immediate
from tests.conftest import derivations
from tests.db.test_repository import lapse_claims, pending
from tests.fakes import InterceptedBlobs, ManualOffload
from tests.images import jpeg, opened
from tests.results import failure_of, no_result, result_of
from tests.service_calls import derived_body
from tests.unit.test_service import PHOTO, POLICY, files, run

NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@dataclass
class World:
    """Who is alive, and what time it is, as every process sees it."""

    root: Path
    database: Database
    alive: set[str] = field(default_factory=set)
    timer: Clock = field(default_factory=Clock)
    now: datetime = NOON

    def process(
        self,
        name: str,
        imaging: Offload = immediate,
        blobs: IBlobStore | None = None,
        clock_ahead: timedelta = timedelta(0),
        admission: ImageAdmission | None = None,
    ) -> ImageService:
        """A process; its own clock may run ahead of the others'."""
        self.alive.add(name)
        if blobs is None:
            blobs = FilesystemBlobStore(self.root, immediate)
            result_of(blobs.recover())
        peers = Peers(name, lambda owner: succeed(owner in self.alive), self.timer)
        return ImageService(
            self.database,
            blobs,
            imaging,
            POLICY,
            clock=lambda: self.now + clock_ahead,
            peers=peers,
            admission=admission,
        )

    def dies(self, name: str) -> None:
        self.alive.discard(name)

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.timer.advance(seconds)


@pytest.fixture
def world(tmp_path: Path, database: Database) -> World:
    return World(tmp_path / "files", database)


def ask(service: ImageService, name: str = "photo-100x100.jpg") -> Deferred[object]:
    return run(derived_body(service, name))


def holding(
    world: World, name: str, blobs: IBlobStore | None = None
) -> tuple[ImageService, ManualOffload, Deferred[object]]:
    """A process that has PHOTO and has claimed its 100x100 derivation, with
    the rendering held until the test runs it."""
    imaging = ManualOffload()
    service = world.process(name, imaging, blobs)
    upload = run(service.store_original(PHOTO, jpeg((400, 300))))
    imaging.run_all()
    result_of(upload)
    asked = ask(service)
    assert len(imaging.pending) == 1, "the rendering waits"
    return service, imaging, asked


def test_of_two_processes_asked_at_once_one_derives_and_both_serve_it(
    world: World, log_events: list[LogEvent]
) -> None:
    _a, a_imaging, a_asked = holding(world, "a")
    b_imaging = ManualOffload()
    b = world.process("b", b_imaging)
    b_asked = ask(b)
    world.wait(POLL_MOST)
    no_result(b_asked)
    a_imaging.run_all()
    world.wait(POLL_MOST)
    a_result, b_result = result_of(a_asked), result_of(b_asked)
    assert a_result == b_result
    assert opened(a_result.data).size == (100, 100)  # type: ignore[attr-defined]
    assert b_imaging.calls == 0
    assert derivations(log_events) == ["photo-100x100.jpeg"]
    assert result_of(world.database.read(claims_txn)) == []


def test_a_waiter_sees_a_peers_derivation_soon_after_it_is_done(world: World) -> None:
    # As a 20 MP photo's working copy: made in 0.72 s while a peer waits.
    # The waiter looks again less and less often, but never so seldom that
    # it sees the result later than half its wait again (twice as seldom
    # each time, it saw this one 0.40 s late).
    _a, a_imaging, a_asked = holding(world, "a")
    b = world.process("b", ManualOffload())
    b_asked = ask(b)
    step, waited = 0.01, 0.0
    while waited < 0.72:
        world.wait(step)
        waited += step
    no_result(b_asked)
    a_imaging.run_all()
    derived = result_of(a_asked)
    late = 0.0
    while not b_asked.called and late < 2.0:
        world.wait(step)
        late += step
    assert result_of(b_asked) == derived
    assert late <= waited / 2 + step


def test_a_peer_that_died_holding_a_claim_is_taken_over_at_once(
    world: World, log_events: list[LogEvent]
) -> None:
    holding(world, "a")
    world.dies("a")
    b = world.process("b")
    assert opened(result_of(ask(b)).data).size == (100, 100)  # type: ignore[attr-defined]
    assert derivations(log_events) == ["photo-100x100.jpeg"]


def test_a_live_peer_that_stalls_past_its_lease_is_taken_over(
    world: World, log_events: list[LogEvent]
) -> None:
    _a, a_imaging, a_asked = holding(world, "a")
    b = world.process("b")
    b_asked = ask(b)
    # a's lease runs out by the database's clock: a has stalled.
    lapse_claims(world.database)
    world.timer.advance(POLL_MOST)
    b_result = result_of(b_asked)
    assert opened(b_result.data).size == (100, 100)  # type: ignore[attr-defined]
    # When a finishes after all, its token no longer holds the claim: it
    # records nothing, removes its own file, and serves b's.
    a_imaging.run_all()
    assert result_of(a_asked) == b_result
    assert derivations(log_events) == ["photo-100x100.jpeg"]
    assert result_of(world.database.read(claims_txn)) == []
    assert files(b._blobs) == sorted([original_key(PHOTO, _generation(world)), b_result.record.blob_key])  # type: ignore[arg-type,attr-defined]


def test_a_claimant_whose_clock_runs_ahead_waits_for_a_live_holder(
    world: World, log_events: list[LogEvent]
) -> None:
    _a, a_imaging, a_asked = holding(world, "a")
    b = world.process("b", clock_ahead=CLAIM_LEASE + timedelta(seconds=1))
    b_asked = ask(b)
    world.wait(POLL_MOST)
    no_result(b_asked)
    a_imaging.run_all()
    world.wait(POLL_MOST)
    assert result_of(b_asked) == result_of(a_asked)
    assert derivations(log_events) == ["photo-100x100.jpeg"]


def _expiry(world: World) -> datetime:
    def read(connection: object) -> datetime:
        value: datetime = connection.execute(select(derivation_claims.c.expires_at)).scalar_one()  # type: ignore[attr-defined]
        return value

    return result_of(world.database.read(read))


def test_a_holder_renews_its_claim_while_it_works(world: World) -> None:
    holding(world, "a")
    first = _expiry(world)
    world.wait(CLAIM_LEASE.total_seconds() / 3)
    assert _expiry(world) > first
    outcome, held = result_of(
        world.database.transact(
            claim_derivation_txn, "photo", "100x100.jpeg", _generation(world), "b", "token-b", CLAIM_LEASE
        )
    )
    assert outcome is ClaimOutcome.HELD
    assert held is not None and held.owner == "a"


def test_waiting_for_a_peers_derivation_holds_no_place_in_the_image_queue(world: World) -> None:
    holding(world, "a")
    b = world.process("b", ManualOffload(), admission=ImageAdmission(slots=1, max_queue=0, clock=world.timer))
    b_asked = ask(b)
    no_result(b_asked)
    # b takes no image thread for what a derives: its own new work is welcome.
    assert b.image_load() == {"threads": 1, "busy": 0, "queued": 0, "max_queue": 0, "full": False}


def test_a_holder_stuck_past_the_hold_limit_lets_its_claim_lapse(world: World) -> None:
    holding(world, "a")
    step = CLAIM_LEASE.total_seconds() / 3
    hold_limit = 2 * (POLICY.limits.time_budget or 20.0)
    world.wait(hold_limit)  # the last renewal
    renewed_last = _expiry(world)
    for _ in range(3):
        world.wait(step)
    # Stuck for good: no renewal after the limit, so the lease runs out.
    assert _expiry(world) == renewed_last


def test_a_waiter_answers_503_once_a_live_holder_takes_too_long(world: World) -> None:
    holding(world, "a")
    b_asked = ask(world.process("b"))
    hold_limit = 2 * (POLICY.limits.time_budget or 20.0)
    world.wait(hold_limit / 2)
    no_result(b_asked)
    for _ in range(int(hold_limit / POLL_MOST) + 2):
        world.wait(POLL_MOST)
    failure_of(b_asked).trap(DerivationPending)


def test_a_holder_whose_renewal_finds_its_claim_taken_stops_and_serves_the_new_holders(
    world: World, log_events: list[LogEvent]
) -> None:
    a_blobs = InterceptedBlobs(FilesystemBlobStore(world.root, immediate))
    result_of(a_blobs.recover())
    _a, a_imaging, a_asked = holding(world, "a", a_blobs)
    lapse_claims(world.database)
    b_imaging = ManualOffload()
    b = world.process("b", b_imaging)
    b_asked = ask(b)  # takes a's lapsed claim over
    world.wait(CLAIM_LEASE.total_seconds() / 3)  # a's renewal finds its claim gone
    a_imaging.run_all()  # a's rendering ends: a stores nothing
    assert [key for key in a_blobs.puts if key.startswith("derived/")] == []
    b_imaging.run_all()
    world.wait(POLL_MOST)
    assert result_of(a_asked) == result_of(b_asked)
    assert derivations(log_events) == ["photo-100x100.jpeg"]


def test_a_stale_derivation_never_releases_the_claim_its_process_took_again(world: World) -> None:
    a, a_imaging, first = holding(world, "a")
    # The ID is deleted and uploaded again while a derives the old upload...
    result_of(run(a.delete_original(PHOTO)))
    upload = run(a.store_original(PHOTO, jpeg((400, 300))))
    a_imaging.run_one(1)  # the new upload's probe; the old rendering still waits
    result_of(upload)
    # ... and a is asked for the new upload's rendition: it claims it again.
    second = ask(a)
    (newer,) = result_of(world.database.read(claims_txn))
    # The old derivation ends: it may release no claim but its own, and its
    # request, finding the ID uploaded again, waits for the new rendition.
    a_imaging.run_one()
    no_result(first)
    assert result_of(world.database.read(claims_txn)) == [newer]
    a_imaging.run_all()
    rendition = result_of(second).data  # type: ignore[attr-defined]
    assert opened(rendition).size == (100, 100)
    assert result_of(first).data == rendition  # type: ignore[attr-defined]
    assert result_of(world.database.read(claims_txn)) == []


def _generation(world: World) -> str:
    original = result_of(world.database.read(find_original_txn, "photo"))
    assert original is not None
    return original.generation


def test_a_deletion_in_one_process_while_another_derives_leaves_nothing(world: World) -> None:
    _a, a_imaging, a_asked = holding(world, "a")
    b = world.process("b")
    result_of(run(b.delete_original(PHOTO)))
    a_imaging.run_all()
    failure_of(a_asked).trap(ImageNotFound)
    assert files(b._blobs) == []  # type: ignore[arg-type]
    assert result_of(world.database.read(claims_txn)) == []


def _claimed_file(world: World) -> str:
    (claim,) = result_of(world.database.read(claims_txn))
    return claimed_key(claim)


class TestRecovery:
    def test_leaves_a_live_peers_pending_upload_and_finishes_a_dead_ones(self, world: World) -> None:
        a = world.process("a")
        # The state of a's upload between its claim and its ready mark.
        record = replace(pending("photo", "0123abcd"), blob_key=original_key(PHOTO, "0123abcd"))
        result_of(world.database.transact(claim_original_txn, record, "a"))
        result_of(a._blobs.put(record.blob_key, jpeg()))
        b = world.process("b")
        result_of(run(b.recover()))
        assert result_of(world.database.read(status_of_txn, "photo")) is OriginalStatus.PENDING
        assert files(b._blobs) == [record.blob_key]  # type: ignore[arg-type]
        world.dies("a")
        result_of(run(b.recover()))
        assert result_of(world.database.read(status_of_txn, "photo")) is None
        assert files(b._blobs) == []  # type: ignore[arg-type]

    def test_removes_a_file_a_dead_peer_stored_but_never_recorded(self, world: World) -> None:
        a, _imaging, _asked = holding(world, "a")
        generation = _generation(world)
        world.dies("a")
        # a stored the rendition, then died before recording it.
        result_of(a._blobs.put(_claimed_file(world), b"rendered"))
        b = world.process("b")
        result_of(run(b.recover()))
        assert result_of(world.database.read(claims_txn)) == []
        assert files(b._blobs) == [original_key(PHOTO, generation)]  # type: ignore[arg-type]

    def test_a_claim_whose_original_was_deleted_is_cleaned_up_too(self, world: World) -> None:
        a, _imaging, _asked = holding(world, "a")
        b = world.process("b")
        result_of(run(b.delete_original(PHOTO)))
        world.dies("a")
        # a's rendering was stored after the deletion swept the files.
        result_of(a._blobs.put(_claimed_file(world), b"late"))
        result_of(run(b.recover()))
        assert files(b._blobs) == []  # type: ignore[arg-type]
        assert result_of(world.database.read(claims_txn)) == []


def test_an_upload_takes_an_id_left_pending_by_a_dead_peer_but_not_a_live_ones(world: World) -> None:
    a = world.process("a")
    record = replace(pending("photo", "0123abcd"), blob_key=original_key(PHOTO, "0123abcd"))
    result_of(world.database.transact(claim_original_txn, record, "a"))
    result_of(a._blobs.put(record.blob_key, jpeg()))
    b = world.process("b")
    failure_of(run(b.store_original(PHOTO, jpeg()))).trap(ImageIdTaken)
    world.dies("a")
    assert result_of(run(b.store_original(PHOTO, jpeg()))).status is OriginalStatus.READY
    assert record.blob_key not in files(b._blobs)  # type: ignore[arg-type]


def test_recovery_leaves_a_live_peers_deletion_and_finishes_a_dead_ones(world: World) -> None:
    a = world.process("a")
    result_of(run(a.store_original(PHOTO, jpeg())))
    # a has marked the original for deletion; its files are not gone yet.
    result_of(world.database.transact(begin_removal_txn, "photo", world.now, "a"))
    b = world.process("b")
    result_of(run(b.recover()))
    assert result_of(world.database.read(status_of_txn, "photo")) is OriginalStatus.DELETING
    assert len(files(b._blobs)) == 1  # type: ignore[arg-type]
    world.dies("a")
    result_of(run(b.recover()))
    assert result_of(world.database.read(status_of_txn, "photo")) is None
    assert files(b._blobs) == []  # type: ignore[arg-type]


def test_a_derivation_whose_key_holds_another_writes_object_is_lost_to_it(
    world: World, log_events: list[LogEvent]
) -> None:
    # A store with conditional writes refuses to replace an object: the
    # holder removes nothing of it, ends its claim, and derives again under
    # a new claim (a new token, a new key).
    blobs = InterceptedBlobs(FilesystemBlobStore(world.root, immediate))
    result_of(blobs.recover())
    foreign: list[str] = []

    def already_there(key: str) -> bool:
        if key.startswith("derived/") and not foreign:
            foreign.append(key)
            result_of(FilesystemBlobStore(world.root, immediate).put(key, b"another write's"))
            return True
        return False

    blobs.already_there = already_there
    _a, imaging, asked = holding(world, "a", blobs)
    imaging.run_all()
    world.wait(POLL_MOST)
    imaging.run_all()
    served = result_of(asked).data  # type: ignore[attr-defined]
    assert opened(served).size == (100, 100)
    derived = [key for key in blobs.puts if key.startswith("derived/")]
    assert len(derived) == 2 and derived[0] == foreign[0] != derived[1]
    assert result_of(blobs.get(foreign[0])) == b"another write's"
    assert result_of(world.database.read(claims_txn)) == []
    assert derivations(log_events) == ["photo-100x100.jpeg"]


def _turn(mine: bool) -> Callable[[], Deferred[bool]]:
    return lambda: succeed(mine)


def test_the_sweep_finishes_what_a_peer_that_never_returns_left(world: World) -> None:
    # a dies holding a derivation whose file it stored, a pending upload
    # whose file it stored, and an upload it acknowledged; c is alive with a
    # pending upload of its own, and b, alive, sweeps: no process restarts.
    a, _imaging, _asked = holding(world, "a")
    result_of(a._blobs.put(_claimed_file(world), b"rendered"))
    derived_generation = _generation(world)
    unfinished = replace(
        pending("unfinished", "0123abcd"), blob_key=original_key(ImageId("unfinished"), "0123abcd")
    )
    result_of(world.database.transact(claim_original_txn, unfinished, "a"))
    result_of(a._blobs.put(unfinished.blob_key, jpeg()))
    c = world.process("c")
    under_way = replace(
        pending("under-way", "4567abcd"), blob_key=original_key(ImageId("under-way"), "4567abcd")
    )
    result_of(world.database.transact(claim_original_txn, under_way, "c"))
    result_of(c._blobs.put(under_way.blob_key, jpeg()))
    world.dies("a")
    b_blobs = FilesystemBlobStore(world.root, immediate, "b", lambda name: name in world.alive)
    result_of(b_blobs.recover())  # b's start-up, before a died
    b = world.process("b", blobs=b_blobs)
    # b's own write under way, which start-up recovery (not the sweep) removes.
    (world.root / ".tmp" / "b" / "put-under-way").write_bytes(b"half")
    before = sorted(files(b_blobs))  # type: ignore[arg-type]
    # Not b's turn: nothing is touched.
    assert result_of(run(b.sweep(_turn(False)))) is False
    assert sorted(files(b_blobs)) == before  # type: ignore[arg-type]
    assert len(result_of(world.database.read(claims_txn))) == 1
    assert result_of(run(b.sweep(_turn(True)))) is True
    assert result_of(world.database.read(claims_txn)) == []
    assert result_of(world.database.read(status_of_txn, "unfinished")) is None
    assert result_of(world.database.read(status_of_txn, "under-way")) is OriginalStatus.PENDING
    assert result_of(world.database.read(status_of_txn, "photo")) is OriginalStatus.READY
    # Left: the acknowledged original, c's upload under way, b's own write.
    assert sorted(files(b_blobs)) == sorted(  # type: ignore[arg-type]
        [original_key(PHOTO, derived_generation), under_way.blob_key, ".tmp/b/put-under-way"]
    )
