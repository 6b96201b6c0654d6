"""An answer leaves in the reactor turn that read its request, over a real
TCP connection: the client's socket holds it as soon as the server's channel
returns from dataReceived, before the reactor turns again.  It matters most
for a health probe under a burst, where every turn lasts milliseconds."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from pymager_tx.http.site import PymagerSite
from tests.web.test_edge import Echo

_TURNS = 200  # reactor turns a loopback connection may take to be accepted


@pytest.fixture
def site() -> Iterator[tuple[PymagerSite, list[Any], int]]:
    served = PymagerSite(Echo(), max_upload_bytes=1 << 20, reactor=reactor)
    channels: list[Any] = []
    build = served.buildProtocol

    def remembered(address: Any) -> Any:
        channels.append(build(address))
        return channels[-1]

    served.buildProtocol = remembered  # type: ignore[method-assign]
    port = reactor.listenTCP(0, served, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield served, channels, port.getHost().port
    port.stopListening()


async def _accepted(channels: list[Any]) -> Any:
    for _ in range(_TURNS):
        if channels and channels[0].transport is not None:
            return channels[0]
        await deferLater(reactor, 0)  # type: ignore[arg-type]
    raise AssertionError("the server did not accept the connection")


@pytest_twisted.ensureDeferred
async def test_an_answer_is_in_the_clients_socket_before_the_next_turn(
    site: tuple[PymagerSite, list[Any], int],
) -> None:
    _, channels, port = site
    client = socket.create_connection(("127.0.0.1", port))
    try:
        client.setblocking(False)
        channel = await _accepted(channels)
        # As the reactor would on reading it: parsed and answered, and sent.
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"received 0")
        # Kept alive, and the next request too, probe or not.
        channel.dataReceived(b"HEAD /readyz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
        channel.dataReceived(b"GET /derived/a-1x1.jpg HTTP/1.1\r\nHost: h\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        client.close()
        for channel in channels:
            if channel.transport is not None:
                channel.transport.loseConnection()
        await deferLater(reactor, 0)  # type: ignore[arg-type]
