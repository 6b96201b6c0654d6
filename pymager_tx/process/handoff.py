"""
Connections dealt out to worker processes, in turn.

With workers all accepting on one shared socket, the kernel wakes them all
and whoever calls accept() first wins: a burst of connections (a proxy's
keep-alive pool, a load generator) tends to land on one process and stay
there for as long as the connections live, leaving the others idle.  So only
the first process accepts, and it deals each new connection in turn to
itself and to each ready worker, passing the socket over a UNIX socket pair
(SCM_RIGHTS).  That is one system call per connection, not per request.

Each worker's pair also tells it when the first process is gone: the end
of the pair closes with it, however it dies, and the worker stops.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

# Where a worker finds its end of the pair.
CHANNEL_FD = 3
_READY = b"r"
_CONNECTION = b"c"
# Connections taken per wake-up, so that one busy port cannot starve the rest
# of the reactor's work.
_ACCEPTS_PER_WAKE = 8
# Out of descriptors: pause accepting rather than spin on a readable socket.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_EXHAUSTED_PAUSE = 0.5


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the first process's end, the worker's end).  SEQPACKET keeps each
    passed descriptor in a message of its own."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


class Dealer(FileDescriptor):
    """In the first process: accepts on the listening port's socket instead
    of the port itself, and deals the connections out."""

    log = Logger()

    def __init__(self, reactor: Any, port: IListeningPort, factory: IProtocolFactory) -> None:
        super().__init__(reactor)
        self._reactor = reactor
        self._factory = factory
        # A descriptor of our own: the port keeps (and closes) its socket.
        self._listener = socket.socket(fileno=os.dup(port.fileno()))  # type: ignore[attr-defined]
        self._listener.setblocking(False)
        self._family = self._listener.family
        port.stopReading()  # type: ignore[attr-defined]
        self._channels: dict[int, _Channel] = {}
        self._turn = 0
        self._paused = False

    def fileno(self) -> int:
        return self._listener.fileno()

    def add(self, number: int, channel: socket.socket) -> None:
        """Deal to worker number once it says it is ready on channel."""
        self.remove(number)
        reader = _Channel(self._reactor, number, channel, self)
        self._channels[number] = reader
        reader.startReading()

    def remove(self, number: int) -> None:
        reader = self._channels.pop(number, None)
        if reader is not None:
            reader.close()

    def pause(self) -> None:
        """Accept nothing (this process holds all it may) until resume()."""
        self._paused = True
        self.stopReading()

    def resume(self) -> None:
        self._paused = False
        self.startReading()

    def _exhaustion_over(self) -> None:
        if not self._paused:
            self.startReading()

    def doRead(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            if self._paused:
                return  # the last connection dealt here reached the limit
            try:
                connection, _address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.ECONNABORTED:
                    continue
                if error.errno in _EXHAUSTED:
                    self.log.warn("Cannot accept connections for now: {error}", error=error.strerror)
                    self.stopReading()
                    self._reactor.callLater(_EXHAUSTED_PAUSE, self._exhaustion_over)
                    return
                # Linux passes a pending connection's network error (EPROTO,
                # ENETDOWN...) up through accept(), and netfilter EPERM:
                # raising would make the reactor drop the Dealer, and nothing
                # would accept again.  Twisted's own port logs and goes on.
                self.log.warn("accept() failed: {error}", error=error.strerror)
                return
            with connection:
                self._deal(connection)

    def _deal(self, connection: socket.socket) -> None:
        ready = [channel for channel in self._channels.values() if channel.ready]
        turn = self._turn % (len(ready) + 1)
        self._turn += 1
        if turn:
            try:
                socket.send_fds(ready[turn - 1].socket, [_CONNECTION], [connection.fileno()])
                return
            except OSError:
                pass  # its queue is full, or it has just died: serve it here
        self._reactor.adoptStreamConnection(connection.fileno(), self._family, self._factory)

    def close(self) -> None:
        for number in list(self._channels):
            self.remove(number)
        self.stopReading()
        self._listener.close()


class _Channel(FileDescriptor):
    """The first process's end of one worker's pair."""

    def __init__(self, reactor: Any, number: int, channel: socket.socket, dealer: Dealer) -> None:
        super().__init__(reactor)
        self.number = number
        self.socket = channel
        self.ready = False
        self._dealer = dealer

    def fileno(self) -> int:
        return self.socket.fileno()

    def doRead(self) -> Any:
        try:
            message = self.socket.recv(16)
        except BlockingIOError:
            return None
        except OSError as error:
            return Failure(error)
        if not message:
            # The worker is gone; its supervisor hears why from its process.
            self.ready = False
            self.stopReading()
        elif _READY in message:
            self.ready = True
        return None

    def close(self) -> None:
        self.ready = False
        self.stopReading()
        self.socket.close()


class Receiver(FileDescriptor):
    """In a worker: serves the connections the first process passes, and
    stops the worker when the first process is gone."""

    log = Logger()

    def __init__(self, reactor: Any, factory: IProtocolFactory, descriptor: int = CHANNEL_FD) -> None:
        super().__init__(reactor)
        self._reactor = reactor
        self._factory = factory
        self._channel = socket.socket(fileno=descriptor)
        self._channel.setblocking(False)
        self._paused = False

    def fileno(self) -> int:
        return self._channel.fileno()

    def start(self) -> None:
        self.startReading()
        self._channel.send(_READY)

    def pause(self) -> None:
        """Take no more connections (this worker holds all it may) until
        resume(): they queue in the pair, and once it is full the first
        process serves them itself."""
        self._paused = True
        self.stopReading()

    def resume(self) -> None:
        self._paused = False
        self.startReading()

    def doRead(self) -> Any:
        while not self._paused:
            try:
                message, descriptors, _flags, _address = socket.recv_fds(self._channel, 16, 4)
            except BlockingIOError:
                return None
            except OSError as error:
                return Failure(error)
            if not message and not descriptors:
                return Failure(ConnectionError("the first process closed its end"))
            for descriptor in descriptors:
                self._serve(descriptor)

    def _serve(self, descriptor: int) -> None:
        try:
            probe = socket.socket(fileno=descriptor)  # reads the family off it
            family = probe.family
            probe.detach()
            self._reactor.adoptStreamConnection(descriptor, family, self._factory)
        finally:
            os.close(descriptor)  # the reactor holds its own duplicate

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._channel.close()
        if self._reactor.running:
            self.log.info("The first process is gone; this worker stops")
            self._reactor.stop()
