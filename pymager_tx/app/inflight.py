"""
Share one running operation per key among everyone who asks for it meanwhile.

Each caller gets a Deferred of its own.  Cancelling it (Klein does, when a
client disconnects) detaches that caller only: the shared work goes on for the
others and still finishes, so its result is stored for the next request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.core.errors import PymagerError

log = Logger()

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class InFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._waiters: dict[K, list[Deferred[V]]] = {}
        self._deserted: dict[K, Deferred[None]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._waiters

    def __len__(self) -> int:
        return len(self._waiters)

    def run(self, key: K, start: Callable[[], Deferred[V]]) -> Deferred[V]:
        """Wait for the operation running under key, or start it with start()."""
        waiters = self._waiters.get(key)
        joining = waiters is not None
        if waiters is None:
            waiters = self._waiters[key] = []
        waiter: Deferred[V] = Deferred(lambda d: self._leave(key, waiters, d))
        waiters.append(waiter)
        if not joining:
            maybeDeferred(start).addBoth(self._finished, key)
        return waiter

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
        if not waiters and isinstance(result, Failure):
            _unheard(result, "Shared work for {key} failed after every waiter left", key=key)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


def _discard(waiters: list[Deferred[V]], waiter: Deferred[V]) -> None:
    if waiter in waiters:
        waiters.remove(waiter)


def _unheard(failure: Failure, message: str, **fields: Any) -> None:
    """Log a failure nobody is left to hear: a refusal (a domain error) as a
    line, anything else with its traceback."""
    if failure.check(PymagerError, CancelledError):
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
