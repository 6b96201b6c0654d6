"""
Share one running operation per key among everyone who asks for it meanwhile.

Each caller gets a Deferred of its own.  Cancelling it (Klein does, when a
client disconnects) detaches that caller only: the shared work goes on for the
others and still finishes, so its result is stored for the next request.

Work may answer before it finishes (answer()): a rendition is sent as soon
as it is rendered, while it is still being stored and recorded.  Until the
work finishes, whoever asks for it is given that answer at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.core.errors import PymagerError

log = Logger()

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class InFlight(Generic[K, V]):
    def __init__(self, expected: tuple[type[Exception], ...] = ()) -> None:
        """expected: failures that are outcomes, not faults: logged as a line,
        not a traceback, when nobody is left to hear them."""
        self._expected = expected
        self._waiters: dict[K, list[Deferred[V]]] = {}
        self._deserted: dict[K, Deferred[None]] = {}
        self._answers: dict[K, V] = {}
        self._idle: list[tuple[set[K], Deferred[None]]] = []

    def __contains__(self, key: K) -> bool:
        return key in self._waiters

    def __len__(self) -> int:
        return len(self._waiters)

    def run(
        self, key: K, start: Callable[[], Deferred[V]], take_answer: Callable[[], bool] | None = None
    ) -> Deferred[V]:
        """Wait for the operation running under key, or start it with start().
        Work that answered early (answer()) gives its answer at once to a
        caller whose take_answer() says it may have it; any other caller
        waits for the work's own end."""
        if key in self._answers and take_answer is not None and take_answer():
            return succeed(self._answers[key])
        waiters = self._waiters.get(key)
        joining = waiters is not None
        if waiters is None:
            waiters = self._waiters[key] = []
        waiter: Deferred[V] = Deferred(lambda d: self._leave(key, waiters, d))
        waiters.append(waiter)
        if not joining:
            maybeDeferred(start).addBoth(self._finished, key)
        return waiter

    def answer(self, key: K, value: V) -> None:
        """Give value to everyone waiting for the work under key, before it
        ends, and keep it for later callers until then (see run)."""
        waiters = self._waiters.get(key)
        if waiters is None or key in self._answers:
            return
        self._answers[key] = value
        self._deserted.pop(key, None)  # answered: nobody is left to desert it
        answered = list(waiters)
        waiters.clear()
        for waiter in answered:
            waiter.callback(value)

    def idle(self) -> Deferred[None]:
        """Fires once the work running now has ended, answered or not (at
        once if none runs); work started meanwhile is not waited for."""
        running = set(self._waiters)
        if not running:
            return succeed(None)
        entry: tuple[set[K], Deferred[None]] = (running, Deferred(lambda _: self._idle.remove(entry)))
        self._idle.append(entry)
        return entry[1]

    def deserted(self, key: K) -> Deferred[None]:
        """Fires if every waiter for the work running under key leaves before
        it finishes: work that has not begun in earnest (that still waits for
        a thread, say) may then give up; work under way should finish."""
        return self._deserted.setdefault(key, Deferred())

    def _leave(self, key: K, waiters: list[Deferred[V]], waiter: Deferred[V]) -> None:
        _discard(waiters, waiter)
        deserted = self._deserted.get(key)
        if not waiters and deserted is not None and not deserted.called:
            deserted.callback(None)

    def _finished(self, result: V | Failure, key: K) -> None:
        # Forget the key before anyone hears the result, so that a waiter's
        # own callbacks asking again start afresh instead of joining the past.
        self._deserted.pop(key, None)
        waiters = self._waiters.pop(key)
        try:
            self._deliver(result, key, waiters)
        finally:
            self._ended(key)

    def _ended(self, key: K) -> None:
        still: list[tuple[set[K], Deferred[None]]] = []
        for running, waiting in self._idle:
            running.discard(key)
            if running:
                still.append((running, waiting))
            else:
                waiting.callback(None)
        self._idle = still

    def _deliver(self, result: V | Failure, key: K, waiters: list[Deferred[V]]) -> None:
        # The waiters left after an answer are those who were not to have it.
        answered = key in self._answers
        self._answers.pop(key, None)
        if not waiters and isinstance(result, Failure):
            heard = "after it was answered" if answered else "after every waiter left"
            _unheard(result, "Shared work for {key} failed " + heard, self._expected, key=key)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


def _discard(waiters: list[Deferred[V]], waiter: Deferred[V]) -> None:
    if waiter in waiters:
        waiters.remove(waiter)


def _unheard(
    failure: Failure, message: str, expected: tuple[type[Exception], ...] = (), **fields: Any
) -> None:
    """Log a failure nobody is left to hear: a refusal (a domain error) or
    an expected outcome as a line, anything else with its traceback."""
    if failure.check(PymagerError, CancelledError, *expected):
        log.info(message + ": {reason}", reason=failure.getErrorMessage(), **fields)
    else:
        log.failure(message, failure, **fields)


def shielded(work: Deferred[V]) -> Deferred[V]:
    """A Deferred that follows work but whose cancellation leaves work running.

    For writes that must finish once begun, whoever stops waiting for them.
    """
    follower: Deferred[V] = Deferred()

    def forward(result: V | Failure) -> None:
        if follower.called:
            if isinstance(result, Failure):
                _unheard(result, "Work failed after its waiter left")
        else:
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(result)

    work.addBoth(forward)
    return follower
