"""
How many client connections a process holds: a bound, and the listen backlog.

Past max_connections a process stops taking new connections from whatever
feeds it them (the Dealer accepting on the listening socket in the first
process, or a worker's Receiver) and takes them again once one closes: the
connections past the limit wait in the kernel's backlog, not in descriptors
of this process.  Both stop at the connection that reaches the limit.  A TLS
port, which the Dealer cannot accept for, takes a batch of connections per
wake-up; any it takes past the limit in that batch is closed at once (the
Site builds no protocol for it), so the descriptors held never pass the bound.
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


class ConnectionLimit:
    def __init__(self, maximum: int | None = None) -> None:
        self.maximum = maximum
        self.open = 0
        self._feed: Feed | None = None
        self._paused = False
        self._pauses = 0

    def fed_by(self, feed: Feed | None) -> None:
        """Pause and resume feed from now on (None: nothing, when stopping)."""
        self._feed = feed
        self._paused = False
        self._balance()

    def admits(self) -> bool:
        return self.maximum is None or self.open < self.maximum

    def opened(self) -> None:
        self.open += 1
        self._balance()

    def closed(self) -> None:
        self.open -= 1
        self._balance()

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
                    "{open} connections open, the most this process takes: new ones wait in the "
                    "backlog (paused {pauses} times so far)",
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
