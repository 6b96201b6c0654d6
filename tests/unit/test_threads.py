"""Thread pools: image threads yield the CPU to the reactor's, and finished
work reaches the reactor a bounded number of results a turn."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymager_tx.imaging.formats import prepare_codecs
from pymager_tx.process.threads import Completions, ThreadPoolService


def _own_nice_value() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
@pytest_twisted.ensureDeferred
async def test_a_pools_threads_run_nicer_by_its_niceness_and_the_rest_do_not() -> None:
    before = _own_nice_value()
    nice = ThreadPoolService(reactor, "test-nice", 1, niceness=3)
    plain = ThreadPoolService(reactor, "test-plain", 1)
    nice.startService()
    plain.startService()
    try:
        assert await nice.offload(_own_nice_value) == min(19, before + 3)
        assert await plain.offload(_own_nice_value) == before
    finally:
        nice.stopService()
        plain.stopService()
    # The reactor's thread (this one) is left as it was.
    assert _own_nice_value() == before


class _Reactor:
    """callFromThread and callLater(0), each run when the test says: the
    calls a turn schedules wait for the next turn, as in a real reactor."""

    def __init__(self) -> None:
        self.from_threads: list[Callable[[], object]] = []
        self.later: list[Callable[[], object]] = []

    def callFromThread(self, call: Callable[[], object]) -> None:
        self.from_threads.append(call)

    def callLater(self, delay: float, call: Callable[[], object]) -> None:
        assert delay == 0
        self.later.append(call)

    def run_from_threads(self) -> None:
        calls, self.from_threads = self.from_threads, []
        for call in calls:
            call()

    def next_turn(self) -> None:
        calls, self.later = self.later, []
        for call in calls:
            call()


def test_finished_work_reaches_the_reactor_a_turns_worth_at_a_time_in_order() -> None:
    reactor = _Reactor()
    completions = Completions(reactor, per_turn=4)
    fired: list[object] = []
    deferreds = [Deferred[int]() for _ in range(10)]
    for number, deferred in enumerate(deferreds):
        deferred.addBoth(fired.append)
        completions.deliver(deferred, number != 5, number if number != 5 else Failure(ValueError("5")))
    assert len(reactor.from_threads) == 1  # one wake-up for the lot
    reactor.run_from_threads()
    assert fired == [0, 1, 2, 3]
    reactor.next_turn()  # after the network was polled
    assert fired[4:7] == [4, fired[5], 6] and isinstance(fired[5], Failure)
    assert len(fired) == 8
    reactor.next_turn()
    assert fired[8:] == [8, 9]
    reactor.next_turn()
    assert not reactor.later
    # Drained: the next result wakes the reactor again.
    later = Deferred[int]()
    later.addBoth(fired.append)
    completions.deliver(later, True, 10)
    reactor.run_from_threads()
    assert fired[-1] == 10


def test_pools_sharing_completions_share_the_turns_bound() -> None:
    reactor = _Reactor()
    shared = Completions(reactor, per_turn=4)
    pools = [ThreadPoolService(reactor, f"test-shared-{n}", 1, completions=shared) for n in range(2)]  # type: ignore[arg-type]
    fired: list[object] = []
    for pool in pools:
        pool.startService()
    try:
        for number in range(6):
            pools[number % 2].offload(int, number).addBoth(fired.append)
    finally:
        for pool in pools:
            pool.stopService()  # joins the threads: all six finished
    reactor.run_from_threads()
    assert len(fired) == 4  # four in all, not four from each pool
    reactor.next_turn()
    assert sorted(fired) == list(range(6))  # type: ignore[type-var]


def test_prepare_codecs_writes_and_reads_every_output_format() -> None:
    prepare_codecs()
    assert "JPEG" in Image.SAVE and "PNG" in Image.SAVE
