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
        self._next: IDelayedCall | None = None
        self._at_end: list[Callable[[], None]] = []

    def admit(self, waiter: Waiter) -> bool:
        """Whether a request that just arrived may start in this turn; if
        not, waiter.take_turn() is called in a later one."""
        self._schedule()
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
        return len(self._waiting)

    def _schedule(self) -> None:
        if self._next is None:
            self._next = self._reactor.callLater(0, self._new_turn)

    def _new_turn(self) -> None:
        self._next = None
        self._started = 0
        ended, self._at_end = self._at_end, []
        for call in ended:
            call()
        for _ in range(min(self.per_turn, len(self._waiting))):
            self._waiting.popleft().take_turn()
        if self._waiting:
            self._schedule()
