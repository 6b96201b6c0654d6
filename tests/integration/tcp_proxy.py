"""A TCP proxy on 127.0.0.1:0 in the test's reactor, to put between the
service and its bucket: open, it forwards both ways; cut, it drops every
connection and every new one at once (a bucket that is down); held, it
keeps what clients send until released (a bucket that stalls)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class _Upstream(Protocol):
    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def dataReceived(self, data: bytes) -> None:
        self.inbound.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.inbound.transport.loseConnection()  # type: ignore[union-attr]


class _Inbound(Protocol):
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        if self.proxy.is_cut:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.proxy.connections.add(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.upstream_port, timeout=5)
        connecting = connectProtocol(endpoint, _Upstream(self))
        connecting.addCallbacks(self._connected, lambda _: self.transport.abortConnection())  # type: ignore[union-attr]

    def _connected(self, upstream: _Upstream) -> None:
        if self.proxy.is_cut or self not in self.proxy.connections:
            upstream.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.upstream = upstream
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        self.pending.append(data)
        self.flush()

    def flush(self) -> None:
        if self.upstream is None or self.proxy.is_held:
            return
        for data in self.pending:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def abort(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]
        if self.upstream is not None:
            self.upstream.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.proxy.connections.discard(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()  # type: ignore[union-attr]


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: set[_Inbound] = set()
        self.is_cut = False
        self.is_held = False
        self.accepted = 0
        self._port: Any = None

    async def listen(self) -> int:
        """Start listening; the port."""
        proxy = self

        class Inbound(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                proxy.accepted += 1
                return _Inbound(proxy)

        self._port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Inbound())
        port: int = self._port.getHost().port
        return port

    def cut(self) -> None:
        """Drop every connection (and what it held), and every new one,
        until restored."""
        self.is_cut = True
        self.is_held = False
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()

    def restore(self) -> None:
        self.is_cut = False

    def hold(self) -> None:
        """Keep what clients send from now on, until released."""
        self.is_held = True

    def release(self) -> None:
        self.is_held = False
        for connection in list(self.connections):
            connection.flush()

    async def close(self) -> None:
        self.cut()
        if self._port is not None:
            await self._port.stopListening()
