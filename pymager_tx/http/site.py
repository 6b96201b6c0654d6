"""
The HTTP site: bounded in memory, descriptors and time whatever clients do,
and an access log of structured events.

Twisted's Request buffers a whole body before any resource sees it.  Here a
body past a few kilobytes is spooled to an unnamed temporary file in the
upload directory (the file is gone when the request ends, however it ends),
and is refused as soon as it is known to be unwanted: with 401 when write
tokens are required and the request has none that is valid, with 413 when
it is too large, from Content-Length before the first byte or while a
chunked body streams past the limit, and with 503 when max_uploads bodies
are already in progress.  The refusal is sent at once; the rest of the body
is read and dropped for a short while (as nginx's lingering close does), so
the client reads the answer instead of a connection reset.

Time is bounded too: a request's line and headers must arrive within
header_timeout of its first byte, and its body within body_timeout of its
headers (408 otherwise).  A connection's pipelined requests wait while its
client does not read the answers, and each is parsed on a later reactor turn
than the answer before it, so one connection cannot hold the reactor.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pymager_tx.core.errors import Overloaded, Unauthorized, UploadTooLarge
from pymager_tx.core.problems import (
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    PROBLEMS,
    REQUEST_TIMEOUT,
    Problem,
    problem_body,
)
from pymager_tx.http.answers import answer_with_problem
from pymager_tx.http.connections import ConnectionLimit
from pymager_tx.http.guards import WriteTokens, challenge

_LINGER_SECONDS = 5.0
FORM_OVERHEAD_BYTES = 64 * 1024
# Bodies up to this size stay in memory; larger ones are written to disk.
IN_MEMORY_BODY_BYTES = 64 * 1024
# How long a client refused for overload is asked to wait.
_RETRY_AFTER = b"2"
# A line feed that does not end a CRLF: RFC 9112 lets a server reject it, and
# LineReceiver would otherwise wait for a CRLF that never comes.
_BARE_LF = re.compile(rb"(?<!\r)\n")
# A module-level Logger: as a class attribute it would take the class's name.
_access_log = Logger(namespace="pymager_tx.access")


def _refusal(problem: Problem, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response refusing a request, closing the connection."""
    body = problem_body(problem, detail)
    head = [b"HTTP/1.1 %d %s" % (problem.status, RESPONSES[problem.status])]
    for name, value in [
        *headers,
        (b"Content-Type", b"application/problem+json"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Connection", b"close"),
    ]:
        head.append(name + b": " + value)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


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

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connections.opened(self)

    def make_room(self) -> None:
        """Closed, idle, to make room for a new connection (see connections)."""
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadlines()
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None
        super().connectionLost(reason)
        self.site.connections.closed(self)

    def dataReceived(self, data: bytes) -> None:
        if data and self.line_mode and not self._handlingRequest and self._head_deadline is None:
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
        self.transport.write(_refusal(problem, detail))
        _access_log.info(
            "{client} refused: {detail}",
            client=getattr(self.transport.getPeer(), "host", "-"),
            detail=detail,
            status=problem.status,
        )
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        assert self.transport is not None
        self._cancel_deadlines()
        self.transport.write(_refusal(BAD_REQUEST, "the request is not valid HTTP/1.1"))
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        detail = f"a request line or header is longer than {self.MAX_LENGTH} bytes"
        self._refuse_and_close(BAD_REQUEST, detail)


# Control characters would reach a terminal or log viewer raw (ESC starts
# terminal escape sequences), or forge a line break.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def _text(value: bytes) -> str:
    """Request bytes as log text: printable ASCII stays, anything else is escaped."""
    return value.decode("ascii", "backslashreplace").translate(_CONTROLS)


class BodyLimitedRequest(Request):
    site: PymagerSite

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self._site: PymagerSite = channel.site
        self._channel: Any = channel
        self._body: IO[bytes] = BytesIO()
        self.refused = False
        self._upload_slot = False
        self._linger: IDelayedCall | None = None
        self.started_at = self._site.reactor.seconds()
        # For time budgets, which count from a request's arrival.
        self.arrived = time.monotonic()

    def gotLength(self, length: int | None) -> None:
        self.content = self._body
        site = self._site
        hosts = self.requestHeaders.getRawHeaders(b"host", [])
        if self._channel._version == b"HTTP/1.1" and len(hosts) != 1:
            # RFC 9112 section 3.2: exactly one Host, else 400.
            self._refuse(BAD_REQUEST, f"an HTTP/1.1 request has exactly one Host header, not {len(hosts)}")
            return
        if length == 0:
            return
        # Only writes carry bodies: check their token before reading one.
        # The last one, as request.getHeader() (and so the routes) reads it.
        authorization = self.requestHeaders.getRawHeaders(b"authorization", [None])[-1]
        try:
            site.tokens.check(authorization)
        except Unauthorized as error:
            challenge_header = (b"WWW-Authenticate", challenge(error).encode("ascii"))
            self._refuse(PROBLEMS[Unauthorized], error.detail, [challenge_header])
            return
        if length is not None and length > site.max_body_bytes:
            detail = f"the request body is {length} bytes; uploads are limited to {site.max_upload_bytes}"
            self._refuse(PROBLEMS[UploadTooLarge], detail)
            return
        if not site.take_upload_slot():
            detail = f"{site.max_uploads} uploads are already in progress; retry shortly"
            self._refuse(PROBLEMS[Overloaded], detail, [(b"Retry-After", _RETRY_AFTER)])
            return
        self._upload_slot = True
        # The slot is given back when the request ends: finished, or its
        # connection lost (Request closes content then, deleting the file).
        self.notifyFinish().addBoth(self._give_back_slot)
        # Unnamed once on disk (O_TMPFILE, or unlinked at once): nothing is
        # left behind, even by a crash.  Request closes it, not a with block.
        self._body = self.content = SpooledTemporaryFile(  # noqa: SIM115
            max_size=IN_MEMORY_BODY_BYTES,
            dir=None if site.upload_directory is None else str(site.upload_directory),
        )

    def _give_back_slot(self, _: object = None) -> None:
        if self._upload_slot:
            self._upload_slot = False
            self._site.give_back_upload_slot()

    def discard_body(self) -> None:
        """Drop the body received so far (the request will not be answered)."""
        self._body.close()
        self._body = self.content = BytesIO()
        self._give_back_slot()

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        site = self._site
        if self._body.tell() + len(data) > site.max_body_bytes:
            detail = f"the request body is larger than the upload limit of {site.max_upload_bytes} bytes"
            self._refuse(PROBLEMS[UploadTooLarge], detail)
            return
        self._body.write(data)

    def process(self) -> None:
        if self.path == b"*" and self.method != b"OPTIONS":
            # Twisted answers these with an empty 405; every refusal here
            # is a problem document.
            detail = "only OPTIONS applies to the server as a whole (*)"
            self.setHeader(b"Allow", b"OPTIONS")
            self.write(answer_with_problem(self, METHOD_NOT_ALLOWED, detail))
            self.finish()
            return
        super().process()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            # The client sent the whole body after all: now it can read the
            # answer, and the connection closes without a reset.
            self._stop_lingering()
            self._channel.transport.loseConnection()
            return
        super().requestReceived(command, path, version)

    def _refuse(self, problem: Problem, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.refused = True
        self.discard_body()
        # Twisted answers "Expect: 100-continue" right after gotLength();
        # without the header it sends no 100 and the client gets the refusal.
        self.requestHeaders.removeHeader(b"expect")
        channel = self._channel
        channel.transport.write(_refusal(problem, detail, headers))
        channel.persistent = False
        self._linger = self._site.reactor.callLater(_LINGER_SECONDS, channel.transport.abortConnection)
        _access_log.info(
            "{client} refused {method} {uri}: {detail}",
            client=getattr(self.getClientAddress(), "host", "-"),
            method=_text(getattr(channel, "_command", b"-")),
            uri=_text(getattr(channel, "_path", b"-")),
            detail=detail,
            status=problem.status,
        )

    def connectionLost(self, reason: Any) -> None:
        self._stop_lingering()
        super().connectionLost(reason)

    def _stop_lingering(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()


class PymagerSite(Site):
    """A Site that bounds request bodies, connections and the time requests
    take to arrive, and logs each request as a structured event."""

    # A plain HTTPChannel: HTTP/1.1 only, no HTTP/2 negotiation over TLS
    # (TLS belongs to the proxy in front).
    protocol = ProblemChannel  # type: ignore[assignment]
    requestFactory = BodyLimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource: IResource,
        max_upload_bytes: int,
        reactor: IReactorTime,
        idle_timeout: float = 60.0,
        trust_forwarded_for: bool = False,
        tokens: WriteTokens | None = None,
        access_log: bool = True,
        upload_directory: Path | None = None,
        max_uploads: int = 16,
        header_timeout: float = 10.0,
        body_timeout: float = 300.0,
        max_connections: int | None = None,
    ) -> None:
        """upload_directory: where bodies are spooled (None: the system's
        temporary directory); max_connections: None for no limit."""
        super().__init__(resource, reactor=reactor, timeout=idle_timeout)
        self.access_log = access_log
        self._parsePOSTFormSubmission = False
        self.max_upload_bytes = max_upload_bytes
        # A form around an upload of max_upload_bytes is a little larger.
        self.max_body_bytes = max_upload_bytes + FORM_OVERHEAD_BYTES
        self.trust_forwarded_for = trust_forwarded_for
        self.tokens = tokens or WriteTokens(())
        self.upload_directory = upload_directory
        self.max_uploads = max_uploads
        self.uploads = 0
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.connections = ConnectionLimit(max_connections)

    def buildProtocol(self, addr: Any) -> Any:
        if not self.connections.admits():
            # Taken in the same accept batch as the one that reached the
            # limit: closed at once, so descriptors stay within it.
            return None
        return super().buildProtocol(addr)

    def take_upload_slot(self) -> bool:
        if self.uploads >= self.max_uploads:
            return False
        self.uploads += 1
        return True

    def give_back_upload_slot(self) -> None:
        self.uploads -= 1

    def log(self, request: Request) -> None:  # type: ignore[override]
        if not self.access_log:
            return
        client = request.getClientAddress()
        host = getattr(client, "host", "-")
        if self.trust_forwarded_for:
            forwarded = request.getHeader(b"x-forwarded-for")
            if forwarded:
                # The last entry is the one our proxy added; the ones before
                # it are whatever the client claimed.
                host = forwarded.split(b",")[-1].strip().decode("latin-1")
        started = getattr(request, "started_at", None)
        _access_log.info(
            '{client} "{method} {uri} {protocol}" {status} {length} "{referrer}" "{agent}" '
            "{duration_ms:.1f}ms",
            client=host,
            method=_text(request.method),
            uri=_text(request.uri),
            protocol=_text(request.clientproto),
            status=request.code,
            length=request.sentLength or "-",
            referrer=_text(request.getHeader(b"referer") or b"-"),
            agent=_text(request.getHeader(b"user-agent") or b"-"),
            duration_ms=0.0 if started is None else (self.reactor.seconds() - started) * 1000,
        )
