"""A PymagerClient on a Clock, talking to a resource in memory through treq's
RequestTraversalAgent: nothing waits on a socket, a thread or real time."""

from __future__ import annotations

from typing import Any, TypeVar

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import IResource

from pymager_tx.client import PymagerClient
from tests.results import failure_of, result_of

BASE = "http://images.example.com"
T = TypeVar("T")


class Harness:
    def __init__(self, resource: IResource, token: str | None = None, **options: Any) -> None:
        self.clock = Clock()
        self.agent = RequestTraversalAgent(resource)
        self.http = HTTPClient(self.agent)
        self.client = PymagerClient(BASE, token, reactor=self.clock, http_client=self.http, **options)

    def run(self, work: Deferred[T]) -> Deferred[T]:
        """Turn the clock (without letting time pass) and move the bytes
        until work is done or nothing moves any more."""
        for _ in range(10_000):
            if work.called:
                break
            self.clock.advance(0)
            self.agent.flush()
        return work

    def settle(self) -> None:
        """Let everything that can happen without time passing happen."""
        for _ in range(50):
            self.clock.advance(0)
            self.agent.flush()

    def wait(self, seconds: float) -> None:
        """Let seconds pass, then settle."""
        self.clock.advance(seconds)
        self.settle()

    def result(self, work: Deferred[T]) -> T:
        return result_of(self.run(work))  # type: ignore[no-any-return]

    def failure(self, work: Deferred[Any], *kinds: type[BaseException]) -> Any:
        return failure_of(self.run(work), *kinds)
