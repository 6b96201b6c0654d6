"""
The HTTP channel: answers to malformed HTTP are problem documents, a
request's head and body have deadlines, and a connection's pipelined
requests wait while its client does not read the answers, each parsed on a
later reactor turn than the answer before it, so one connection cannot hold
the reactor.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from pymager_tx.core.problems import BAD_REQUEST, REQUEST_TIMEOUT, Problem
from pymager_tx.http.access_log import log_refusal
from pymager_tx.http.answers import refusal
from pymager_tx.http.metrics import NO_ROUTE, method_label
from pymager_tx.http.turns import is_probe

if TYPE_CHECKING:
    from pymager_tx.http.site import PymagerSite

# A line feed that does not end a CRLF: RFC 9112 lets a server reject it, and
# LineReceiver would otherwise wait for a CRLF that never comes.
_BARE_LF = re.compile(rb"(?<!\r)\n")


class ProblemChannel(HTTPChannel):
    """An HTTPChannel whose answers to malformed HTTP are problem documents,
    with deadlines, and whose pipelined requests wait their turn.

    Twisted answers a request it cannot parse with a bare "400 Bad Request"
    and a request line or header over its line limit with nothing at all;
    both hooks are overridden here, as are the choice of a transfer decoder
    and the end of a request (all private to Twisted, and
    tests/web/test_edge.py checks they still exist).
    """

    site: PymagerSite
    _head_deadline: IDelayedCall | None = None
    _body_deadline: IDelayedCall | None = None
    # Pipelined requests buffered behind a finished one, not parsed yet.
    _held = False
    _release_call: IDelayedCall | None = None
    # A request that arrived past this turn's budget (see turns): its bytes,
    # kept while its connection is paused until its turn comes.
    _waiting_turn: list[bytes] | None = None
    _turn_given = False
    _lost = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connections.opened(self)

    def make_room(self) -> None:
        """Closed, idle, to make room for a new connection (see connections)."""
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._waiting_turn = None
        self._cancel_deadlines()
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None
        super().connectionLost(reason)
        self.site.connections.closed(self)

    def take_turn(self) -> None:
        waited, self._waiting_turn = self._waiting_turn or [], None
        if self._lost or self._closing():
            return
        self._turn_given = True
        self._networkProducer.resumeProducing()
        self.dataReceived(b"".join(waited))

    def dataReceived(self, data: bytes) -> None:
        if self._waiting_turn is not None:
            self._waiting_turn.append(data)
            return
        if data and self.line_mode and not self._handlingRequest and self._head_deadline is None:
            if not self._turn_given and not self.site.turns.admit(self, is_probe(data[:16])):
                self._waiting_turn = [data]
                self._networkProducer.pauseProducing()
                return
            self._turn_given = False
            # The first byte of a request: its head has header_timeout to arrive.
            self._head_deadline = self.callLater(self.site.header_timeout, self._head_too_slow)
            self.site.connections.busy(self)
        super().dataReceived(data)
        if (
            self.line_mode
            and not self._busyReceiving
            and not self._closing()
            and _BARE_LF.search(self._buffer)
        ):
            self._refuse_and_close(BAD_REQUEST, "a line of the request ends in a bare LF, not CRLF")

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        # RFC 9112 section 6.3: chunked must be the final coding, and no other
        # coding is implemented; Twisted lets "identity" pass, alone or in a
        # second Transfer-Encoding line after chunked, which a proxy in front
        # may read differently (request smuggling).
        if header == b"Transfer-Encoding" and data.lower() != b"chunked":
            return bool(self._failChooseTransferDecoder())
        return bool(super()._maybeChooseTransferDecoder(header, data))

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        super().allHeadersReceived()
        request = self.requests[-1]
        if self.length != 0 and not request.refused:
            self._body_deadline = self.callLater(self.site.body_timeout, self._body_too_slow)

    def allContentReceived(self) -> None:
        self._cancel_deadlines()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        # Buffered: in _dataBuffer, or (for a request answered at once, in
        # the middle of parsing) still in LineReceiver's buffer, which the
        # parsing loop then hands to rawDataReceived: into _dataBuffer.
        if not (self.persistent and (self._dataBuffer or self._buffer)):
            super().requestDone(request)
            if self.persistent and not self._closing():
                self.site.connections.idle(self)
                _send_now(self.transport)
            return
        # Requests already buffered behind this one: HTTPChannel would parse
        # them at once, even while the client reads none of the answers, and
        # answer a whole pipeline in this one reactor turn.  Hold them (and
        # whatever arrives meanwhile, behind them) for a later turn, and for
        # as long as the transport is full.
        if request is not self.requests[0]:
            raise TypeError(request)
        del self.requests[0]
        self._held = True
        if self._savedTimeOut:
            # Idle again: a client that never reads is timed out.
            self.setTimeout(self._savedTimeOut)
        if self._waitingForTransport:
            self._networkProducer.pauseProducing()
        else:
            self._release_soon()

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self._held:
            self._networkProducer.pauseProducing()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._held:
            self._release_soon()

    def _release_soon(self) -> None:
        if self._release_call is None:
            self._release_call = self.callLater(0, self._release)

    def _release(self) -> None:
        self._release_call = None
        if not self._held or self._closing():
            return
        if self._waitingForTransport:
            return  # resumeProducing calls again
        self._held = False
        self._handlingRequest = False
        data = b"".join(self._dataBuffer)
        self._dataBuffer = []
        self._networkProducer.resumeProducing()
        self.setLineMode(data)

    def _closing(self) -> bool:
        return self.transport is None or bool(getattr(self.transport, "disconnecting", False))

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def _cancel_deadlines(self) -> None:
        self._cancel_head_deadline()
        if self._body_deadline is not None and self._body_deadline.active():
            self._body_deadline.cancel()
        self._body_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        detail = (
            f"the request line and headers did not all arrive within {self.site.header_timeout:g} seconds"
        )
        self._refuse_and_close(REQUEST_TIMEOUT, detail)

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        if self.requests:
            self.requests[-1].discard_body()
        detail = f"the request body did not all arrive within {self.site.body_timeout:g} seconds"
        self._refuse_and_close(REQUEST_TIMEOUT, detail)

    def _refuse_and_close(self, problem: Problem, detail: str) -> None:
        self._cancel_deadlines()
        if self._closing():
            return  # refused already
        assert self.transport is not None
        self._write_refusal(problem, detail)
        self.loseConnection()

    def _count_refusal(self, status: int) -> None:
        """A request refused before it was whole: counted with no route."""
        request = self.requests[-1] if self.requests else None
        started = getattr(request, "started_at", None)
        method = getattr(self, "_command", None) if request is not None else None
        seconds = 0.0 if started is None else self.site.reactor.seconds() - started
        self.site.metrics.http_request(method_label(method), NO_ROUTE, status, seconds)

    def _respondToBadRequestAndDisconnect(self) -> None:
        assert self.transport is not None
        self._cancel_deadlines()
        self._write_refusal(BAD_REQUEST, "the request is not valid HTTP/1.1")
        self.loseConnection()

    def _write_refusal(self, problem: Problem, detail: str) -> None:
        assert self.transport is not None
        answer = refusal(problem, detail)
        self.transport.write(answer)
        request = self.requests[-1] if self.requests else None
        started = getattr(request, "started_at", None)
        log_refusal(
            getattr(self.transport.getPeer(), "host", "-"),
            getattr(self, "_command", None) or b"-",
            getattr(self, "_path", None) or b"-",
            problem.status,
            len(answer),
            None if request is None else request.requestHeaders.getRawHeaders(b"user-agent", [None])[-1],
            0.0 if started is None else (self.site.reactor.seconds() - started) * 1000,
            detail,
        )
        self._count_refusal(problem.status)

    def lineLengthExceeded(self, line: bytes) -> None:
        detail = f"a request line or header is longer than {self.MAX_LENGTH} bytes"
        self._refuse_and_close(BAD_REQUEST, detail)


def _send_now(transport: object) -> None:
    """Hand a finished answer to the kernel in this reactor turn.  A
    transport sends what it was given when the reactor next finds its
    socket writable, a turn later: under a burst each turn lasts
    milliseconds, and a load balancer's probe would wait one more of them
    than it must; one at a time, the extra turn costs a poll of its own
    (3% of a warm request's instructions).  The reactor's own doWrite: what
    the socket does not take, or an error, stays for the reactor's next
    turn, as usual.  A pipelined answer is not sent here: its connection
    waits its turn (requestDone)."""
    if isinstance(transport, FileDescriptor) and transport.connected and not transport.disconnecting:
        transport.doWrite()
