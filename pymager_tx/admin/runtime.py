"""
How the long-running commands (import, warm, prune) run: on a reactor of
their own, made for the one command and thrown away after it (never the
global one, so that a program or a test may run commands one after another),
and, when they work on the store directly, as one more process of the data
directory, built through the composition root like the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymager_tx.adapters.sql.admin_txn import AdminQueries
from pymager_tx.adapters.sql.schema_version import State, status_txn
from pymager_tx.admin.command import AdminError, Target
from pymager_tx.app.service import ImageService
from pymager_tx.ports import IStoreUpkeep
from pymager_tx.process.threads import ThreadPoolService
from pymager_tx.process.wiring import Offloads, Store, build_service, build_store

T = TypeVar("T")


def new_reactor() -> Any:
    """A reactor of this command's own, not installed as the global one."""
    try:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    except ImportError:  # not Linux
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()


def run(work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run work(reactor) on a new reactor until it is done; its result, or
    its exception raised here."""
    reactor = new_reactor()
    outcome: list[T | Failure] = []

    def start() -> None:
        done = Deferred.fromCoroutine(work(reactor))
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if not outcome:
        raise AdminError("interrupted")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


@dataclass(frozen=True)
class Direct:
    """The store the settings name and the service on it, for this command."""

    store: Store
    service: ImageService
    queries: AdminQueries


@asynccontextmanager
async def direct(target: Target, reactor: Any, image_threads: int) -> AsyncIterator[Direct]:
    """Join the data directory as one more process (registered, so that
    recovery elsewhere leaves what this command holds alone), with the
    database and storage worked in this thread (Offloads.at_once) and the
    image work on image_threads threads of its own (at once if 0)."""
    schema = target.transact(status_txn)
    if schema.state is not State.CURRENT:
        raise AdminError(f"{target.shown_url}: {schema.describe()}; run `pymager-admin db upgrade` first")
    pool = ThreadPoolService(reactor, "pymager-admin-images", image_threads) if image_threads else None
    offloads = Offloads.at_once() if pool is None else replace(Offloads.at_once(), images=pool.offload)
    store = build_store(target.settings, offloads, timer=reactor, pool_size=1)
    store.owners.register()
    store.epoch.open()
    if pool is not None:
        pool.startService()
    heartbeat = store.heartbeat
    try:
        if heartbeat is not None:
            # With leases in the database, a process without one may claim
            # nothing (the fence): this command holds one while it runs.
            await heartbeat.join()
            heartbeat.start()
        # This process's place for unfinished writes (and what dead ones left there).
        upkeep = IStoreUpkeep(store.blobs, None)
        if upkeep is not None:
            await upkeep.recover()
        service = build_service(target.settings, store, offloads.images, memory_cache=False)
        yield Direct(store, service, AdminQueries(store.database))
    finally:
        if heartbeat is not None:
            await heartbeat.leave()
        if pool is not None:
            pool.stopService()
        await store.close()
        store.epoch.close()
        store.owners.release()


def settled(deferred: Deferred[T]) -> T:
    """The result of a Deferred that has fired (work run at once, Offloads.at_once)."""
    results: list[T | Failure] = []
    deferred.addBoth(results.append)
    assert results, "work that does not run at once"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
