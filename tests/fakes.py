"""Threadless fakes for the seams the service offers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred

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
