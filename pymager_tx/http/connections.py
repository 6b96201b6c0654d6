"""
How many client connections a process holds: a bound, and the listen backlog.

At max_connections, a new connection first makes room by closing the one
that has been idle longest (a keep-alive connection between requests, or
one that never sent a byte), as nginx drains reusable connections: idle
connections cannot shut new clients out.  At the limit with none idle, a
process stops taking new connections from whatever feeds it them (the
Dealer accepting on the listening socket in the first process, or a
worker's Receiver) and takes them again once one closes: the connections
past the limit wait in the kernel's backlog, not in descriptors of this
process.  Both stop at the connection that reaches the limit.  A TLS port,
which the Dealer cannot accept for, takes a batch of connections per
wake-up; any it takes past the limit in that batch is closed at once (the
Site builds no protocol for it), so the descriptors held never pass the
bound.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

_log = Logger(namespace="pymager_tx.http.connections")
# Endpoint types whose parsers take backlog=.
_BACKLOG_ENDPOINTS = frozenset({"tcp", "tcp6", "unix"})


class Feed(Protocol):
    """What hands a process its connections, and can hold them back."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class PortFeed:
    """A listening port as a Feed (tcp.Port and unix.Port read to accept)."""

    def __init__(self, port: object) -> None:
        self._port = port

    def pause(self) -> None:
        self._port.stopReading()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self._port.startReading()  # type: ignore[attr-defined]


class Idle(Protocol):
    """A connection that can be closed to make room."""

    def make_room(self) -> None: ...


class ConnectionLimit:
    def __init__(self, maximum: int | None = None) -> None:
        self.maximum = maximum
        self.open = 0
        self._feed: Feed | None = None
        self._paused = False
        self._pauses = 0
        # Connections between requests, longest idle first.
        self._idle: dict[Idle, None] = {}
        self._closing: set[Idle] = set()
        self.reclaimed = 0

    def fed_by(self, feed: Feed | None) -> None:
        """Pause and resume feed from now on (None: nothing, when stopping)."""
        self._feed = feed
        self._paused = False
        self._balance()

    def admits(self) -> bool:
        """Whether a new connection can be taken: there is room, or an idle
        connection to close for it."""
        return self.maximum is None or self._held() < self.maximum or bool(self._idle)

    def _held(self) -> int:
        return self.open - len(self._closing)

    def opened(self, connection: Idle) -> None:
        self.open += 1
        self._make_room()
        self._idle[connection] = None  # idle until its first byte
        self._balance()

    def busy(self, connection: Idle) -> None:
        """connection has begun a request: it is not to be reclaimed."""
        self._idle.pop(connection, None)
        self._balance()

    def idle(self, connection: Idle) -> None:
        """connection has answered its requests and waits for another."""
        if connection not in self._closing:
            self._idle.pop(connection, None)
            self._idle[connection] = None
            self._balance()

    def closed(self, connection: Idle) -> None:
        self.open -= 1
        self._idle.pop(connection, None)
        self._closing.discard(connection)
        self._balance()

    def _make_room(self) -> None:
        while self.maximum is not None and self._held() > self.maximum and self._idle:
            oldest = next(iter(self._idle))
            del self._idle[oldest]
            self._closing.add(oldest)
            self.reclaimed += 1
            oldest.make_room()

    def _balance(self) -> None:
        if self._feed is None:
            return
        full = not self.admits()
        if full and not self._paused:
            self._paused = True
            self._feed.pause()
            self._pauses += 1
            # At the limit, pausing and resuming may alternate with every
            # connection: say so the first time, then every thousandth.
            if self._pauses % 1000 == 1:
                _log.warn(
                    "{open} connections open, the most this process takes, none of them idle: new "
                    "ones wait in the backlog (paused {pauses} times so far)",
                    open=self.open,
                    maximum=self.maximum,
                    pauses=self._pauses,
                )
        elif not full and self._paused:
            self._paused = False
            self._feed.resume()


def with_backlog(listen: str, backlog: int) -> str:
    """The endpoint string listen, with backlog= unless it names its own."""
    kind = listen.split(":", 1)[0].lower()
    if kind not in _BACKLOG_ENDPOINTS or "backlog=" in listen:
        return listen
    return f"{listen}:backlog={backlog}"
