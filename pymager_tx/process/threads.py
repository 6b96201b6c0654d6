"""
Thread pools owned by services, and the offload seam.

Everything that may block (decoding, resizing, encoding, file I/O, database
calls) is handed to an Offload: a callable that runs a plain function
somewhere else and returns a Deferred of its result.  Production passes pools;
tests pass immediate() and stay single-threaded and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from threading import Thread
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class _DaemonThreadPool(ThreadPool):
    # stopService joins the threads on every orderly shutdown; daemon threads
    # only matter when that never happens, and then they must not keep a dying
    # process alive.
    threadFactory = staticmethod(partial(Thread, daemon=True))  # type: ignore[assignment]


class ThreadPoolService(Service):
    """Runs a named pool for as long as the service runs."""

    def __init__(self, reactor: IReactorFromThreads, name: str, size: int) -> None:
        self.name = name
        self._reactor = reactor
        self.pool = _DaemonThreadPool(minthreads=0, maxthreads=size, name=name)

    def offload(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self.pool, work, *args, **kwargs)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        # Joins the pool's threads; the services using the pool stop first.
        self.pool.stop()
