"""
The HTTP site: request bodies refused before they are buffered, and an access
log of structured events.

Twisted's Request buffers a whole body (spooling past 100 kB to a temporary
file, written on the reactor thread) before any resource sees it.  Here the
body stays in memory, and is refused as soon as it is known to be unwanted:
with 401 when write tokens are required and the request has none that is
valid, and with 413 when it is too large, from Content-Length before the
first byte or while a chunked body streams past the limit.  The refusal is
sent at once; the rest of the body is read and dropped for a short while (as
nginx's lingering close does), so the client reads the answer instead of a
connection reset.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pymager_tx.auth import WriteTokens, challenge
from pymager_tx.errors import Unauthorized, UploadTooLarge
from pymager_tx.problems import (
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    PROBLEMS,
    Problem,
    answer_with_problem,
    problem_body,
)

_LINGER_SECONDS = 5.0
FORM_OVERHEAD_BYTES = 64 * 1024
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
    """An HTTPChannel whose answers to malformed HTTP are problem documents.

    Twisted answers a request it cannot parse with a bare "400 Bad Request"
    and a request line or header over its line limit with nothing at all;
    both hooks are overridden here (the first is private to Twisted, and
    tests/web/test_site.py guards it).
    """

    def _respondToBadRequestAndDisconnect(self) -> None:
        assert self.transport is not None
        self.transport.write(_refusal(BAD_REQUEST, "the request is not valid HTTP/1.1"))
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        assert self.transport is not None
        detail = f"a request line or header is longer than {self.MAX_LENGTH} bytes"
        self.transport.write(_refusal(BAD_REQUEST, detail))
        self.loseConnection()


def _text(value: bytes) -> str:
    """Request bytes as log text: ASCII stays, anything else is escaped."""
    return value.decode("ascii", "backslashreplace")


class BodyLimitedRequest(Request):
    site: PymagerSite

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self._site: PymagerSite = channel.site
        self._channel: Any = channel
        self._body = BytesIO()
        self._refused = False
        self._linger: IDelayedCall | None = None
        self.started_at = self._site.reactor.seconds()
        # For time budgets, which count from a request's arrival.
        self.arrived = time.monotonic()

    def gotLength(self, length: int | None) -> None:
        self.content = self._body
        site = self._site
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

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
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
        if self._refused:
            # The client sent the whole body after all: now it can read the
            # answer, and the connection closes without a reset.
            self._stop_lingering()
            self._channel.transport.loseConnection()
            return
        super().requestReceived(command, path, version)

    def _refuse(self, problem: Problem, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._refused = True
        self._body = self.content = BytesIO()
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
    """A Site that caps request bodies and logs each request as a structured event."""

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
    ) -> None:
        super().__init__(resource, reactor=reactor, timeout=idle_timeout)
        self.access_log = access_log
        self._parsePOSTFormSubmission = False
        self.max_upload_bytes = max_upload_bytes
        # A form around an upload of max_upload_bytes is a little larger.
        self.max_body_bytes = max_upload_bytes + FORM_OVERHEAD_BYTES
        self.trust_forwarded_for = trust_forwarded_for
        self.tokens = tokens or WriteTokens(())

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
