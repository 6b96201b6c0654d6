"""Peer liveness from leases in the database, on SQLite and on PostgreSQL:
joining, renewing, lapsing (by the database's clock), burying, leaving, and
the fence on a process whose lease lapsed.  No sleeps: a lease is made to
lapse by writing an expiry in the past, and this process's own time runs on
a Clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, insert, select, update
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.heartbeat import Heartbeat, LeaseLiveness
from pymager_tx.adapters.sql.lease import Lease
from pymager_tx.adapters.sql.processes_txn import (
    LeaseLapsed,
    bury_lapsed_txn,
    join_txn,
    lease_left_txn,
    leave_txn,
    renew_lease_txn,
    sweep_turn_txn,
)
from pymager_tx.adapters.sql.renditions_txn import claims_txn
from pymager_tx.adapters.sql.rows import database_now
from pymager_tx.adapters.sql.schema import processes
from pymager_tx.core.errors import DatabaseUnavailable
from pymager_tx.core.records import ClaimOutcome
from pymager_tx.ports import immediate
from tests.db.test_repository import pending
from tests.results import failure_of, result_of

T = TypeVar("T")
LEASE = timedelta(seconds=12)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
FAR_AHEAD = datetime(2999, 1, 1, tzinfo=UTC)


def lapse(database: Database, name: str, at: datetime = LONG_AGO) -> None:
    """name's lease runs out, as the database's clock sees it."""
    result_of(
        database.transact(
            lambda c: c.execute(update(processes).where(processes.c.name == name).values(expires_at=at))
        )
    )


def row(name: str, expires_at: datetime) -> Callable[[Connection], None]:
    def insert_row(conn: Connection) -> None:
        conn.execute(
            insert(processes).values(name=name, host="elsewhere", started_at=LONG_AGO, expires_at=expires_at)
        )

    return insert_row


def names(database: Database) -> list[str]:
    return sorted(result_of(database.read(lambda c: list(c.execute(select(processes.c.name)).scalars()))))


class Switch:
    """An offload that runs transactions at once while the database is up,
    and fails them as a database that does not answer would while it is down."""

    def __init__(self) -> None:
        self.up = True

    def __call__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        if not self.up:
            return fail(DatabaseUnavailable("the metadata database is unavailable", "connection refused"))
        return immediate(work, *args, **kwargs)


# The transactions


def test_a_joined_process_has_a_lease_by_the_database_clock(database: Database) -> None:
    result_of(database.transact(join_txn, "node-a", "host-a", LEASE))
    left = result_of(database.read(lease_left_txn, "node-a"))
    assert left is not None and 0 < left <= LEASE.total_seconds()
    assert result_of(database.read(lease_left_txn, "node-b")) is None


def test_a_lease_is_judged_by_the_database_clock_not_the_callers(database: Database) -> None:
    # Written by a process whose clock is decades off: only the database's
    # clock counts, so a far future expiry holds and a past one has lapsed.
    result_of(database.transact(row("ahead", FAR_AHEAD)))
    result_of(database.transact(row("behind", LONG_AGO)))
    assert result_of(database.read(lease_left_txn, "ahead")) is not None
    assert result_of(database.read(lease_left_txn, "behind")) is None


def test_a_lease_lapses_the_moment_the_database_clock_passes_it(database: Database) -> None:
    result_of(database.transact(join_txn, "node-a", "host-a", LEASE))
    now = result_of(database.read(database_now))
    lapse(database, "node-a", at=now)  # the database's now is already past it
    assert result_of(database.read(lease_left_txn, "node-a")) is None


def test_renewing_a_live_lease_extends_it(database: Database) -> None:
    result_of(database.transact(join_txn, "node-a", "host-a", timedelta(seconds=5)))
    assert result_of(database.transact(renew_lease_txn, "node-a", "host-a", LEASE)) is True
    left = result_of(database.read(lease_left_txn, "node-a"))
    assert left is not None and left > 5


def test_renewing_a_lapsed_lease_says_so_and_joins_again(database: Database) -> None:
    result_of(database.transact(join_txn, "node-a", "host-a", LEASE))
    lapse(database, "node-a")
    assert result_of(database.transact(renew_lease_txn, "node-a", "host-a", LEASE)) is False
    assert result_of(database.read(lease_left_txn, "node-a")) is not None
    # Buried meanwhile: the same.
    result_of(database.transact(leave_txn, "node-a"))
    assert result_of(database.transact(renew_lease_txn, "node-a", "host-a", LEASE)) is False
    assert names(database) == ["node-a"]


def test_burying_removes_only_lapsed_rows(database: Database) -> None:
    result_of(database.transact(row("dead-1", LONG_AGO)))
    result_of(database.transact(row("dead-2", LONG_AGO)))
    result_of(database.transact(join_txn, "live", "host-a", LEASE))
    assert result_of(database.transact(bury_lapsed_txn)) == ["dead-1", "dead-2"]
    assert names(database) == ["live"]
    assert result_of(database.transact(bury_lapsed_txn)) == []


def test_the_sweep_is_the_first_live_process_s_turn_and_it_buries_the_lapsed(database: Database) -> None:
    result_of(database.transact(row("a-dead", LONG_AGO)))
    result_of(database.transact(join_txn, "b-live", "host-b", LEASE))
    result_of(database.transact(join_txn, "c-live", "host-c", LEASE))
    # One process's turn at a time, whichever died: the first live by name.
    assert result_of(database.transact(sweep_turn_txn, "c-live")) is False
    assert names(database) == ["a-dead", "b-live", "c-live"]
    assert result_of(database.transact(sweep_turn_txn, "b-live")) is True
    assert names(database) == ["b-live", "c-live"]
    # A process whose lease lapsed (fenced) never sweeps; the next one does.
    lapse(database, "b-live")
    assert result_of(database.transact(sweep_turn_txn, "b-live")) is False
    assert result_of(database.transact(sweep_turn_txn, "c-live")) is True
    assert names(database) == ["c-live"]
    assert result_of(database.transact(sweep_turn_txn, "never-joined")) is False


# Liveness


def test_liveness_from_leases(database: Database) -> None:
    result_of(database.transact(join_txn, "peer", "host-b", LEASE))
    result_of(database.transact(row("dead", LONG_AGO)))
    liveness = LeaseLiveness(database, "me", remember=3.0, monotonic=Clock().seconds)
    assert result_of(liveness.alive("peer")) is True
    assert result_of(liveness.alive("dead")) is False
    assert result_of(liveness.alive("never-seen")) is False
    assert result_of(liveness.alive(None)) is False
    # This process is alive to itself, joined or not.
    assert result_of(liveness.alive("me")) is True


def test_a_live_answer_is_remembered_for_a_while_and_never_past_the_lease(database: Database) -> None:
    clock = Clock()
    liveness = LeaseLiveness(database, "me", remember=3.0, monotonic=clock.seconds)
    result_of(database.transact(join_txn, "peer", "host-b", LEASE))
    assert result_of(liveness.alive("peer")) is True
    result_of(database.transact(leave_txn, "peer"))
    clock.advance(2.9)
    assert result_of(liveness.alive("peer")) is True  # remembered
    clock.advance(0.2)
    assert result_of(liveness.alive("peer")) is False  # asked again

    # A lease with less left than `remember` is remembered only that long.
    result_of(database.transact(join_txn, "peer", "host-b", timedelta(seconds=1)))
    assert result_of(liveness.alive("peer")) is True
    lapse(database, "peer")
    clock.advance(1.0)
    assert result_of(liveness.alive("peer")) is False


def test_a_dead_answer_is_not_remembered(database: Database) -> None:
    liveness = LeaseLiveness(database, "me", remember=3.0, monotonic=Clock().seconds)
    assert result_of(liveness.alive("peer")) is False
    result_of(database.transact(join_txn, "peer", "host-b", LEASE))
    assert result_of(liveness.alive("peer")) is True


# The fence in the database


def test_claims_need_the_claimants_lease(database: Database) -> None:
    fenced = Database(database.engine, immediate, lease=Lease("node-a", 12.0))
    failure = failure_of(fenced.claim_original(pending(), "node-a"))
    failure.trap(LeaseLapsed)
    assert "node-a" in failure.value.reason
    failure_of(fenced.claim_derivation("photo", "100x100.jpeg", "g1", "node-a", "t" * 32, LEASE)).trap(
        LeaseLapsed
    )

    result_of(database.transact(join_txn, "node-a", "host-a", LEASE))
    result_of(fenced.claim_original(pending(), "node-a"))
    lapse(database, "node-a")
    failure_of(fenced.claim_derivation("photo", "100x100.jpeg", "g1", "node-a", "t" * 32, LEASE)).trap(
        LeaseLapsed
    )
    assert result_of(database.read(claims_txn)) == []

    result_of(database.transact(renew_lease_txn, "node-a", "host-a", LEASE))
    outcome, _claim = result_of(
        fenced.claim_derivation("photo", "100x100.jpeg", "g1", "node-a", "t" * 32, LEASE)
    )
    assert outcome is ClaimOutcome.GONE  # past the fence: the original is pending, not ready


def test_without_a_lease_claims_are_not_fenced(database: Database) -> None:
    # Flock liveness, and the command line: no processes rows at all.
    result_of(database.claim_original(pending(), "node-a"))


# The heartbeat


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
def beating(database: Database, clock: Clock, switch: Switch) -> Iterator[tuple[Database, Heartbeat]]:
    """A process whose transactions go through switch, with its heartbeat."""
    lease = Lease("node-a", 12.0, monotonic=clock.seconds)
    mine = Database(database.engine, switch, lease=lease)
    heartbeat = Heartbeat(mine, lease, "host-a", 3.0, clock)
    yield mine, heartbeat
    switch.up = True
    result_of(Deferred.fromCoroutine(heartbeat.leave()))


def test_joining_buries_the_lapsed_and_registers(
    database: Database, beating: tuple[Database, Heartbeat], log_events: list[LogEvent]
) -> None:
    mine, heartbeat = beating
    result_of(database.transact(row("dead", LONG_AGO)))
    result_of(database.transact(row("live", FAR_AHEAD)))
    assert mine.lease is not None and mine.lease.lapsed() is not None  # not joined yet

    result_of(Deferred.fromCoroutine(heartbeat.join()))

    assert names(database) == ["live", "node-a"]
    assert mine.lease.lapsed() is None
    assert any(event.get("names") == "dead" for event in log_events)
    result_of(mine.ping())


def test_the_heartbeat_renews_every_period(
    database: Database, beating: tuple[Database, Heartbeat], clock: Clock
) -> None:
    _mine, heartbeat = beating
    result_of(Deferred.fromCoroutine(heartbeat.join()))
    heartbeat.start()
    lapse(database, "node-a", at=FAR_AHEAD)  # a renewal moves it back to now + lease
    clock.advance(2.9)
    assert result_of(database.read(lease_left_txn, "node-a")) > LEASE.total_seconds()  # type: ignore[operator]
    clock.advance(0.1)
    left = result_of(database.read(lease_left_txn, "node-a"))
    assert left is not None and left <= LEASE.total_seconds()


def test_a_process_whose_renewals_fail_for_a_lease_is_fenced_until_one_commits(
    database: Database,
    beating: tuple[Database, Heartbeat],
    clock: Clock,
    switch: Switch,
    log_events: list[LogEvent],
) -> None:
    mine, heartbeat = beating
    result_of(Deferred.fromCoroutine(heartbeat.join()))
    heartbeat.start()
    switch.up = False
    clock.pump([3.0] * 3)  # 9 s without a renewal: still within the lease
    assert mine.lease is not None and mine.lease.lapsed() is None
    assert not any(event["log_level"] is LogLevel.critical for event in log_events)

    clock.pump([3.0])  # 12 s: the lease may have lapsed in the database's eyes
    lapsed = mine.lease.lapsed()
    assert lapsed is not None and "node-a" in lapsed
    critical = [event for event in log_events if event["log_level"] is LogLevel.critical]
    assert len(critical) == 1 and "Fenced" in critical[0]["log_format"]
    # Health says so even with the database back, until a renewal commits.
    switch.up = True
    assert not mine.answered_within(60)
    failure_of(mine.ping()).trap(LeaseLapsed)

    clock.advance(3.0)
    assert mine.lease.lapsed() is None
    result_of(mine.ping())


def test_a_renewal_that_finds_its_lease_lapsed_joins_again_and_says_so(
    database: Database, beating: tuple[Database, Heartbeat], clock: Clock, log_events: list[LogEvent]
) -> None:
    _mine, heartbeat = beating
    result_of(Deferred.fromCoroutine(heartbeat.join()))
    heartbeat.start()
    lapse(database, "node-a")  # stalled: a peer took it for dead

    clock.advance(3.0)

    assert result_of(database.read(lease_left_txn, "node-a")) is not None
    critical = [event for event in log_events if event["log_level"] is LogLevel.critical]
    assert len(critical) == 1 and "had lapsed" in critical[0]["log_format"]


def test_leaving_removes_the_row_and_stops_renewing(
    database: Database, beating: tuple[Database, Heartbeat], clock: Clock
) -> None:
    mine, heartbeat = beating
    result_of(Deferred.fromCoroutine(heartbeat.join()))
    heartbeat.start()

    result_of(Deferred.fromCoroutine(heartbeat.leave()))

    assert names(database) == []
    clock.advance(30.0)
    assert names(database) == []  # no renewal joined it again
    assert mine.lease is not None and mine.lease.lapsed() is not None
    assert result_of(LeaseLiveness(database, "node-b", remember=3.0).alive("node-a")) is False
