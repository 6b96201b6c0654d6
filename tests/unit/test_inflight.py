from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import LogEvent

from pymager_tx.app.inflight import InFlight, shielded
from pymager_tx.core.errors import ImageIdTaken
from tests.results import failure_of, no_result, result_of


class Work:
    """Shared work that finishes when the test says so, counting its starts."""

    def __init__(self) -> None:
        self.started: list[Deferred[str]] = []

    def __call__(self) -> Deferred[str]:
        self.started.append(Deferred())
        return self.started[-1]


def test_concurrent_callers_share_one_run_and_its_result() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    waiters = [inflight.run("a-100x100.jpeg", work) for _ in range(5)]
    assert len(work.started) == 1
    for waiter in waiters:
        no_result(waiter)
    work.started[0].callback("bytes")
    assert [result_of(w) for w in waiters] == ["bytes"] * 5
    assert "a-100x100.jpeg" not in inflight


def test_different_keys_run_separately() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    inflight.run("a", work)
    inflight.run("b", work)
    assert len(work.started) == 2


def test_a_cancelled_waiter_leaves_the_work_and_the_others_alone() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    leaving, staying = inflight.run("k", work), inflight.run("k", work)
    leaving.cancel()
    failure_of(leaving).trap(CancelledError)
    assert not work.started[0].called
    work.started[0].callback("bytes")
    assert result_of(staying) == "bytes"


def test_work_finishes_even_when_every_waiter_left() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    only = inflight.run("k", work)
    only.cancel()
    failure_of(only)
    work.started[0].callback("stored anyway")
    assert "k" not in inflight


def test_a_failure_reaches_every_waiter_and_the_next_call_starts_afresh() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    waiters = [inflight.run("k", work) for _ in range(3)]
    work.started[0].errback(ValueError("broken image"))
    for waiter in waiters:
        failure_of(waiter).trap(ValueError)
    inflight.run("k", work)
    assert len(work.started) == 2


def test_asking_again_from_a_callback_starts_new_work() -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    again: list[Deferred[str]] = []
    inflight.run("k", work).addCallback(lambda _: again.append(inflight.run("k", work)))
    work.started[0].callback("first")
    assert len(work.started) == 2
    no_result(again[0])


def test_work_that_finishes_at_once() -> None:
    inflight: InFlight[str, int] = InFlight()
    assert result_of(inflight.run("k", lambda: Deferred.fromCoroutine(_answer()))) == 42
    assert len(inflight) == 0


async def _answer() -> int:
    return 42


def test_shielded_cancellation_does_not_reach_the_work() -> None:
    work: Deferred[str] = Deferred()
    follower = shielded(work)
    follower.cancel()
    failure_of(follower).trap(CancelledError)
    assert not work.called
    work.callback("written")


def test_shielded_follows_the_result() -> None:
    work: Deferred[str] = Deferred()
    follower = shielded(work)
    work.callback("written")
    assert result_of(follower) == "written"


def test_a_refusal_nobody_hears_is_logged_without_a_traceback(log_events: list[LogEvent]) -> None:
    work: Deferred[str] = Deferred()
    follower = shielded(work)
    follower.cancel()
    failure_of(follower)
    work.errback(ImageIdTaken("an image is already stored under the ID 'x'"))
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.app.inflight"]
    assert "log_failure" not in event
    assert "already stored" in event["reason"]


def test_a_failure_nobody_hears_is_logged_with_its_traceback(log_events: list[LogEvent]) -> None:
    inflight: InFlight[str, str] = InFlight()
    work = Work()
    only = inflight.run("k", work)
    only.cancel()
    failure_of(only)
    work.started[0].errback(OSError("disk on fire"))
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.app.inflight"]
    assert event["log_failure"].check(OSError)


def test_work_hears_when_every_waiter_has_left() -> None:
    inflight: InFlight[str, str] = InFlight()
    deserted: list[Deferred[None]] = []

    def start() -> Deferred[str]:
        deserted.append(inflight.deserted("k"))
        return Deferred()

    first, second = inflight.run("k", start), inflight.run("k", start)
    first.cancel()
    no_result(deserted[0])
    second.cancel()
    assert result_of(deserted[0]) is None
