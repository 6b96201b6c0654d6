"""Threadless fakes for the seams the service offers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred
from zope.interface import implementer

from pymager_tx.core.errors import BlobExists, StorageUnavailable
from pymager_tx.ports import IBlobReader, IBlobStore, IKeyListing, IStoreUpkeep

T = TypeVar("T")


class ManualOffload:
    """An offload whose work waits until the test runs it, in the test's thread.

    Lets a test hold a derivation "in flight" for as long as it likes, without
    threads or sleeps.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self.calls = 0

    def __call__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        self.calls += 1
        waiting: Deferred[T] = Deferred()
        self.pending.append((waiting, work, args, kwargs))
        return waiting

    def run_all(self) -> None:
        while self.pending:
            self.run_one()

    def run_one(self, index: int = 0) -> None:
        waiting, work, args, kwargs = self.pending.pop(index)
        maybeDeferred(work, *args, **kwargs).chainDeferred(waiting)

    def run_held(self, index: int = 0) -> Callable[[], None]:
        """Do the work now; its caller hears of it when the returned function is called."""
        waiting, work, args, kwargs = self.pending.pop(index)
        result = work(*args, **kwargs)
        return lambda: waiting.callback(result)


@implementer(IBlobStore, IStoreUpkeep)
class InterceptedBlobs:
    """A blob store that lets a test act just before each delete (another
    process doing its work at that very moment), makes deletes fail (a
    process that dies there), and lists the keys written."""

    def __init__(self, store: IBlobStore) -> None:
        self._store = store
        self.before_delete: Callable[[str], None] | None = None
        self.deletes_fail = False
        self.puts: list[str] = []
        # A put this returns True for meets another write's object: refused
        # as a store with conditional writes refuses it.
        self.already_there: Callable[[str], bool] | None = None

    def put(self, key: str, data: bytes) -> Deferred[None]:
        self.puts.append(key)
        if self.already_there is not None and self.already_there(key):
            return fail(BlobExists(key, f"another write's object is under {key}"))
        return self._store.put(key, data)

    def get(self, key: str) -> Deferred[bytes]:
        return self._store.get(key)

    def open(self, key: str) -> Deferred[IBlobReader]:
        return self._store.open(key)

    def size(self, key: str) -> Deferred[int | None]:
        return self._store.size(key)

    def delete(self, key: str) -> Deferred[None]:
        if self.deletes_fail:
            return fail(StorageUnavailable("the process dies here"))
        if self.before_delete is not None:
            self.before_delete(key)
        return self._store.delete(key)

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        return self._store.delete_prefix(prefix)

    def list(self, prefix: str) -> IKeyListing:
        return self._store.list(prefix)

    def recover(self) -> Deferred[int]:
        return IStoreUpkeep(self._store).recover()

    def sweep(self) -> Deferred[int]:
        return IStoreUpkeep(self._store).sweep()

    def wipe(self) -> Deferred[None]:
        return IStoreUpkeep(self._store).wipe()


class CountedGets(InterceptedBlobs):
    """The keys whose bytes were read, in order."""

    def __init__(self, store: IBlobStore) -> None:
        super().__init__(store)
        self.gets: list[str] = []

    def get(self, key: str) -> Deferred[bytes]:
        self.gets.append(key)
        return super().get(key)
