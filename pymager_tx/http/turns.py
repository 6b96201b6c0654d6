"""
Work per reactor turn, bounded.

A burst of connections (hundreds of requests landing at once) would be
parsed, routed and started in one reactor turn, and every other client,
/healthz included, would wait for all of it.  Here each turn starts at most
`per_turn` requests that just arrived; a request past that waits, its
connection paused, for a later turn, where at most `per_turn` waiting ones
start, in the order they came.  Requests that arrive later still start in
their own turn: a burst is spread over turns instead of standing in front
of whoever comes next.

Health probes (GET or HEAD /healthz and /readyz, known from a request's
first bytes) have a lane of their own with the same budget: a load
balancer's probe does not queue behind a burst of image requests, which
would make a busy process look dead, and a flood of probes is bounded
like any other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# Enough to keep the image and database threads busy; few enough that one
# turn stays in the low milliseconds.
PER_TURN = 16


class Waiter(Protocol):
    def take_turn(self) -> None:
        """Start the request that waited (its connection may be gone)."""


class TurnBudget:
    def __init__(self, reactor: IReactorTime, per_turn: int = PER_TURN) -> None:
        self._reactor = reactor
        self.per_turn = per_turn
        self._started = 0
        self._waiting: deque[Waiter] = deque()
        self._probes_started = 0
        self._probes_waiting: deque[Waiter] = deque()
        self._next: IDelayedCall | None = None
        self._at_end: list[Callable[[], None]] = []

    def admit(self, waiter: Waiter, probe: bool = False) -> bool:
        """Whether a request that just arrived (a health probe, by
        is_probe, or not) may start in this turn; if not,
        waiter.take_turn() is called in a later one."""
        self._schedule()
        if probe:
            if self._probes_started < self.per_turn:
                self._probes_started += 1
                return True
            self._probes_waiting.append(waiter)
            return False
        if self._started < self.per_turn:
            self._started += 1
            return True
        self._waiting.append(waiter)
        return False

    def at_turn_end(self, call: Callable[[], None]) -> None:
        """call() once this turn ends, in the one delayed call a turn with
        arrivals schedules anyway (metrics batch their updates in it)."""
        self._at_end.append(call)
        self._schedule()

    @property
    def waiting(self) -> int:
        return len(self._waiting) + len(self._probes_waiting)

    def _schedule(self) -> None:
        if self._next is None:
            self._next = self._reactor.callLater(0, self._new_turn)

    def _new_turn(self) -> None:
        self._next = None
        self._started = self._probes_started = 0
        ended, self._at_end = self._at_end, []
        for call in ended:
            call()
        for lane in (self._probes_waiting, self._waiting):
            for _ in range(min(self.per_turn, len(lane))):
                lane.popleft().take_turn()
        if self._waiting or self._probes_waiting:
            self._schedule()


_PROBES = tuple(
    method + b" /" + path + end
    for method in (b"GET", b"HEAD")
    for path in (b"healthz", b"readyz")
    for end in (b" ", b"?")
)


def is_probe(first_bytes: bytes) -> bool:
    """Whether a request line starts as a health probe's does."""
    return first_bytes.startswith(_PROBES)
