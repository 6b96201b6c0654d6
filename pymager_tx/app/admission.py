"""
Admission control for image work: as many slots as image threads, and a
bounded queue in front of them.

Work waits for a slot before it reads a single byte, so what waits holds a
reference (an ID, a key), never a picture; past max_queue waiters, new work
is refused at once with Overloaded (503 and Retry-After), the way imgproxy's
REQUESTS_QUEUE_SIZE and nginx's limits answer overload instead of piling it
up.  A waiter leaves the queue when its deadline passes (Overloaded too) or
when nobody wants its result any more (its clients left).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, TimeoutError
from twisted.internet.interfaces import IReactorTime

from pymager_tx.core.errors import Overloaded

T = TypeVar("T")


class ImageAdmission:
    def __init__(self, slots: int, max_queue: int, clock: IReactorTime) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self._clock = clock
        self._semaphore = DeferredSemaphore(slots)

    @property
    def waiting(self) -> int:
        """Work queued for a slot."""
        return len(self._semaphore.waiting)

    @property
    def busy(self) -> int:
        """Slots in use."""
        return self.slots - self._semaphore.tokens

    @property
    def full(self) -> bool:
        """Whether new work would be refused now."""
        return self._semaphore.tokens == 0 and self.waiting >= self.max_queue

    async def run(
        self,
        work: Callable[[], Deferred[T]],
        wait_at_most: float | None = None,
        deserted: Deferred[None] | None = None,
    ) -> T:
        """work(), once a slot is free; the slot is held until its Deferred
        fires.  Refused with Overloaded when the queue is full, or when no
        slot came free within wait_at_most seconds; cancelled (CancelledError)
        if deserted fires while it waits."""
        if self.full:
            raise Overloaded(
                "the server is busy with other images; try again shortly",
                f"{self.waiting} image jobs queued for {self.slots} threads",
            )
        acquired = self._semaphore.acquire()
        if wait_at_most is not None:
            acquired.addTimeout(max(0.0, wait_at_most), self._clock)
        if deserted is not None:
            deserted.addCallback(lambda _: None if acquired.called else acquired.cancel())
        try:
            await acquired
        except TimeoutError:
            raise Overloaded(
                "the server is busy with other images; try again shortly",
                f"no image thread came free within {wait_at_most:.1f}s",
            ) from None
        except CancelledError:
            raise
        try:
            return await work()
        finally:
            self._semaphore.release()

    def describe(self) -> dict[str, Any]:
        return {"threads": self.slots, "busy": self.busy, "queued": self.waiting, "max_queue": self.max_queue}
