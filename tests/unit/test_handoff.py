"""Connections dealt out over real sockets: to this process and to each
ready worker in turn, and served by the worker that receives them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from pymager_tx.handoff import Dealer, Receiver, channel_pair


class Greeter(Protocol):
    """Says who served the connection, then closes it."""

    def connectionMade(self) -> None:
        factory: Greeters = self.factory  # type: ignore[assignment]
        factory.served += 1
        self.transport.write(factory.name)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class Greeters(Factory):
    protocol = Greeter

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.served = 0


class StopRecorder:
    """The reactor, except that stop() is only recorded."""

    def __init__(self) -> None:
        self.stopping: Deferred[None] = Deferred()
        self.running = True

    def stop(self) -> None:
        self.stopping.callback(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def greeting(port: int) -> Deferred[bytes]:
    """Connect in a thread (a plain blocking client) and read what is said."""
    from twisted.internet.threads import deferToThread

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            chunks = []
            while chunk := client.recv(100):
                chunks.append(chunk)
            return b"".join(chunks)

    return deferToThread(talk)


@pytest.fixture
def first() -> Iterator[tuple[Greeters, Any]]:
    factory = Greeters(b"first")
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield factory, port
    port.stopListening()


@pytest_twisted.ensureDeferred
async def test_connections_are_dealt_in_turn_to_this_process_and_each_ready_worker(
    first: tuple[Greeters, Any],
) -> None:
    factory, port = first
    dealer = Dealer(reactor, port, factory)
    workers = []
    for number in (1, 2):
        ours, theirs = channel_pair()
        dealer.add(number, ours)
        stand_in = StopRecorder()
        receiver = Receiver(stand_in, Greeters(b"worker%d" % number), descriptor=theirs.detach())
        receiver.start()  # says it is ready
        workers.append(receiver)
    dealer.startReading()
    # Let the dealer read the two "ready" messages.
    await greeting(port.getHost().port)
    try:
        answers = [await greeting(port.getHost().port) for _ in range(6)]
        assert sorted(answers) == [b"first", b"first", b"worker1", b"worker1", b"worker2", b"worker2"]
    finally:
        for receiver in workers:
            receiver.stopReading()
        dealer.close()


@pytest_twisted.ensureDeferred
async def test_a_worker_not_yet_ready_gets_none(first: tuple[Greeters, Any]) -> None:
    factory, port = first
    dealer = Dealer(reactor, port, factory)
    ours, theirs = channel_pair()
    dealer.add(1, ours)
    dealer.startReading()
    try:
        answers = [await greeting(port.getHost().port) for _ in range(3)]
        assert answers == [b"first"] * 3
    finally:
        dealer.close()
        theirs.close()


@pytest_twisted.ensureDeferred
async def test_connections_go_on_here_when_a_worker_has_died(first: tuple[Greeters, Any]) -> None:
    factory, port = first
    dealer = Dealer(reactor, port, factory)
    ours, theirs = channel_pair()
    dealer.add(1, ours)
    theirs.send(b"r")
    dealer.startReading()
    try:
        await greeting(port.getHost().port)  # the dealer reads "ready"
        theirs.close()  # the worker dies, before its supervisor hears of it
        answers = [await greeting(port.getHost().port) for _ in range(4)]
        assert answers == [b"first"] * 4
    finally:
        dealer.close()


@pytest_twisted.ensureDeferred
async def test_a_worker_stops_when_the_first_process_is_gone() -> None:
    ours, theirs = channel_pair()
    stand_in = StopRecorder()
    receiver = Receiver(stand_in, Greeters(b"worker"), descriptor=theirs.detach())
    receiver.start()
    ours.close()
    await stand_in.stopping.addTimeout(10, reactor)
