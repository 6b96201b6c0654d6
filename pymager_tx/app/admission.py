"""
Admission control for image work: as many slots as image threads, and a
bounded queue in front of them.

Work waits for a slot before it reads a single byte, so what waits holds a
reference (an ID, a key), never a picture; past max_queue waiters, new work
is refused at once with Overloaded (503 and Retry-After), the way imgproxy's
REQUESTS_QUEUE_SIZE and nginx's limits answer overload instead of piling it
up.  A waiter leaves the queue when its deadline passes (Overloaded too) or
when nobody wants its result any more (its clients left).

New derivations take a Ticket as soon as they are known to be new work,
before they spend a transaction on a claim: it holds their place in the
queue on their way to it, and between their steps (a working copy first,
then the rendition), until the derivation ends.  So a burst of requests for
new work is refused after one lookup each, not after a claim, a lookup more
and a release each, and work accepted is never refused halfway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, TimeoutError
from twisted.internet.interfaces import IReactorTime

from pymager_tx.core.errors import Overloaded
from pymager_tx.ports import NO_METRICS, Metrics

T = TypeVar("T")


class Ticket:
    """A place in the queue for accepted work that is not on an image thread
    (nor waiting for one) right now: counted as queued until it is."""

    def __init__(self, admission: ImageAdmission) -> None:
        self._admission = admission
        self.counted = True  # queued, as far as the admission counts
        self.released = False
        admission._ticketed += 1
        admission._changed()

    def release(self) -> None:
        """The work ended (or waits on another process): its place is free."""
        if self.released:
            return
        self.released = True
        self._uncount()

    def _count(self) -> None:
        if not self.counted and not self.released:
            self.counted = True
            self._admission._ticketed += 1
            self._admission._changed()

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self._admission._ticketed -= 1
            self._admission._changed()


class ImageAdmission:
    def __init__(
        self, slots: int, max_queue: int, clock: IReactorTime, metrics: Metrics = NO_METRICS
    ) -> None:
        """metrics: told the depth of the queue (waiting) whenever it changes."""
        self.slots = slots
        self.max_queue = max_queue
        self._clock = clock
        self._semaphore = DeferredSemaphore(slots)
        # Tickets held by accepted work not on (nor queued for) a thread.
        self._ticketed = 0
        self._metrics = metrics

    def _changed(self) -> None:
        self._metrics.image_queue_depth(self.waiting)

    @property
    def waiting(self) -> int:
        """Work queued for a slot, or accepted and on its way to the queue."""
        return len(self._semaphore.waiting) + self._ticketed

    @property
    def busy(self) -> int:
        """Slots in use."""
        return self.slots - self._semaphore.tokens

    @property
    def full(self) -> bool:
        """Whether new work would be refused now."""
        return self.busy + self.waiting >= self.slots + self.max_queue

    def refuse_if_full(self) -> None:
        if self.full:
            raise Overloaded(
                "the server is busy with other images; try again shortly",
                f"{self.waiting} image jobs queued for {self.slots} threads",
            )

    def reserve(self) -> Ticket:
        """A place for new work, or Overloaded at once if there is none."""
        self.refuse_if_full()
        return Ticket(self)

    async def run(
        self,
        work: Callable[[], Deferred[T]],
        wait_at_most: float | None = None,
        deserted: Deferred[None] | None = None,
        ticket: Ticket | None = None,
    ) -> T:
        """work(), once a slot is free; the slot is held until its Deferred
        fires.  Refused with Overloaded when the queue is full (unless ticket
        holds a place in it), or when no slot came free within wait_at_most
        seconds; cancelled (CancelledError) if deserted fires while it waits.
        ticket's place is taken by the queue meanwhile, and held again after."""
        if ticket is None or ticket.released:
            self.refuse_if_full()
            ticket = None
        acquired = self._semaphore.acquire()
        if ticket is not None:
            ticket._uncount()
        if not acquired.called:
            self._changed()  # one more waits for a slot
            acquired.addBoth(self._left_queue)
        try:
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
                if ticket is not None:
                    ticket._count()  # before the slot goes to the next waiter
                self._semaphore.release()
        finally:
            if ticket is not None:
                ticket._count()

    def _left_queue(self, result: T) -> T:
        # Given a slot, timed out or cancelled: no longer waiting.
        self._changed()
        return result

    def describe(self) -> dict[str, Any]:
        return {"threads": self.slots, "busy": self.busy, "queued": self.waiting, "max_queue": self.max_queue}
