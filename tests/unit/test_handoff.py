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

from pymager_tx.process.handoff import Dealer, Receiver, channel_pair


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


class PausingGreeters(Greeters):
    """Pauses what feeds it once it has served one, as a full ConnectionLimit does."""

    feed: Dealer | Receiver

    def buildProtocol(self, addr: Any) -> Protocol | None:
        self.feed.pause()
        return super().buildProtocol(addr)


def test_a_paused_dealer_accepts_nothing_more_even_within_one_wake_up(first: tuple[Greeters, Any]) -> None:
    _, port = first
    factory = PausingGreeters(b"first")
    dealer = Dealer(reactor, port, factory)
    factory.feed = dealer
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) for _ in range(3)]
    try:
        dealer.doRead()  # the three wait in the backlog: one wake-up could take them all
        assert factory.served == 1
        dealer.doRead()
        assert factory.served == 1
        dealer.resume()
        dealer.doRead()
        assert factory.served == 2
    finally:
        for client in clients:
            client.close()
        dealer.close()


def test_a_paused_receiver_takes_no_more_connections() -> None:
    ours, theirs = channel_pair()
    factory = PausingGreeters(b"worker")
    receiver = Receiver(StopRecorder(), factory, descriptor=theirs.detach())
    factory.feed = receiver
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for served, _client in pairs:
            socket.send_fds(ours, [b"c"], [served.fileno()])
        receiver.doRead()
        assert factory.served == 1
        receiver.resume()
        receiver.doRead()
        assert factory.served == 2
    finally:
        receiver.stopReading()
        for one, other in pairs:
            one.close()
            other.close()
        ours.close()
