"""
Sending a stored blob as the client takes it.

A BlobSender is a push producer on the request: it reads the next part of
the blob only once the last one is written and the transport has not asked
it to pause, so a client that reads slowly, or never, holds one part of the
blob in memory, not the whole of it (as static.File's producer does, with
reads on a thread pool instead of the reactor).  A client that leaves stops
it, and the blob is closed at once.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from zope.interface import implementer

from pymager_tx.ports import IBlobReader

_log = Logger()
# Big enough that a 10 MB original takes 80 thread hops, small enough that a
# client that stops reading pins little more than this.
PART_BYTES = 128 * 1024


@implementer(IPushProducer)
class BlobSender:
    def __init__(self, reader: IBlobReader, request: Request, length: int | None = None) -> None:
        """length: send this many bytes from where the reader is (a range),
        None: all it has left."""
        self._reader: IBlobReader | None = reader
        self._left = length
        self._request: Request | None = request
        self._paused = False
        self._reading = False
        self._done: Deferred[None] = Deferred(lambda _: self.stopProducing())

    def send(self) -> Deferred[None]:
        """Fires once the whole blob is written (the caller then finishes the
        request); cancelling it, as Klein does when the client leaves, stops
        sending and closes the blob."""
        assert self._request is not None
        self._request.registerProducer(self, True)
        self._read_next()
        return self._done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._read_next()

    def stopProducing(self) -> None:
        self._end(Failure(CancelledError("the client left")))

    def _read_next(self) -> None:
        if self._paused or self._reading or self._reader is None:
            return
        if self._left is not None and self._left <= 0:
            self._end(None)
            return
        self._reading = True
        wanted = PART_BYTES if self._left is None else min(PART_BYTES, self._left)
        self._reader.read(wanted).addCallbacks(self._got, self._end)

    def _got(self, part: bytes) -> None:
        self._reading = False
        if self._request is None:
            return  # stopped while the part was read
        if not part:
            self._end(None)
            return
        if self._left is not None:
            self._left -= len(part)
        # May pause us at once, when the transport's buffer fills.
        self._request.write(part)
        self._read_next()

    def _end(self, failure: Failure | None) -> None:
        request, reader = self._request, self._reader
        if request is None or reader is None:
            return
        # Drop both at once: a finished sender keeps neither the request nor
        # the blob (and its buffers) alive.
        self._request = self._reader = None
        reader.close().addErrback(_log_close_failure)
        if request.channel is not None:  # None once the connection is gone
            request.unregisterProducer()
        if self._done.called:
            return
        if failure is None:
            self._done.callback(None)
        else:
            self._done.errback(failure)


def _log_close_failure(failure: Failure) -> None:
    _log.warn("Could not close a blob: {reason}", reason=failure.getErrorMessage())
