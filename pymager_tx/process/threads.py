"""
Thread pools owned by services, and the offload seam.

Everything that may block (decoding, resizing, encoding, file I/O, database
calls) is handed to an Offload: a callable that runs a plain function
somewhere else and returns a Deferred of its result.  Production passes pools;
tests pass immediate() and stay single-threaded and deterministic.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from threading import Thread
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class _DaemonThreadPool(ThreadPool):
    # stopService joins the threads on every orderly shutdown; daemon threads
    # only matter when that never happens, and then they must not keep a dying
    # process alive.
    threadFactory = staticmethod(partial(Thread, daemon=True))  # type: ignore[assignment]


class _NiceThread(Thread):
    """A thread that lowers its own scheduling priority before it runs."""

    def __init__(self, niceness: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._niceness = niceness

    def run(self) -> None:
        lower_this_threads_priority(self._niceness)
        super().run()


def lower_this_threads_priority(niceness: int) -> None:
    """Add niceness to the calling thread's nice value, on Linux, where a
    thread is a task with a priority of its own (elsewhere setpriority would
    lower the whole process, so nothing is done)."""
    if niceness <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))


# Results handed to the reactor in one turn, at most: a burst of finished
# work (a hundred lookups that returned while the reactor was busy) is
# spread over turns, with the network read between them.
COMPLETIONS_PER_TURN = 16


class Completions:
    """Work finished on threads, delivered to the reactor in order, at most
    per_turn results a turn.  Twisted's own callFromThread runs every call
    that arrived in one go: 130 lookups answered at once took 48 ms of one
    turn under a burst, and a health probe waited behind them."""

    def __init__(self, reactor: Any, per_turn: int = COMPLETIONS_PER_TURN) -> None:
        self._reactor: IReactorFromThreads = reactor
        self._clock: IReactorTime = reactor
        self.per_turn = per_turn
        self._ready: deque[tuple[Deferred[Any], bool, Any]] = deque()
        self._lock = threading.Lock()
        self._draining = False

    def deliver(self, deferred: Deferred[Any], success: bool, result: Any) -> None:
        """From any thread: fire deferred with result (a Failure when not success)."""
        with self._lock:
            self._ready.append((deferred, success, result))
            if self._draining:
                return
            self._draining = True
        self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        for _ in range(self.per_turn):
            with self._lock:
                if not self._ready:
                    self._draining = False
                    return
                deferred, success, result = self._ready.popleft()
            if success:
                deferred.callback(result)
            else:
                deferred.errback(result)
        # More are ready: in a later turn, after the reactor polled the network.
        self._clock.callLater(0, self._drain)


class ThreadPoolService(Service):
    """Runs a named pool for as long as the service runs."""

    def __init__(
        self,
        reactor: IReactorFromThreads,
        name: str,
        size: int,
        niceness: int = 0,
        completions: Completions | None = None,
    ) -> None:
        """niceness: added to its threads' nice value (see _NiceThread);
        completions: where its results reach the reactor, shared by a
        process's pools so that the bound holds for all of them together
        (by default, its own)."""
        self.name = name
        self._reactor = reactor
        self._completions = completions or Completions(reactor)
        self.pool = _DaemonThreadPool(minthreads=0, maxthreads=size, name=name)
        if niceness > 0:
            self.pool.threadFactory = partial(_NiceThread, niceness, daemon=True)

    def offload(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        """work(*args, **kwargs) on the pool (as deferToThreadPool, but
        delivered through Completions)."""
        result: Deferred[T] = Deferred()

        def done(success: bool, outcome: T | Failure) -> None:
            self._completions.deliver(result, success, outcome)

        self.pool.callInThreadWithCallback(done, work, *args, **kwargs)
        return result

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        # Joins the pool's threads; the services using the pool stop first.
        self.pool.stop()
