"""
A request whose body is bounded before any resource sees it.

Twisted's Request buffers a whole body first.  Here a body past a few
kilobytes is spooled to an unnamed temporary file in the upload directory
(the file is gone when the request ends, however it ends), and is refused as
soon as the upload gate (pymager_tx.http.guards) finds it unwanted: no valid
write token (401), too large (413, from Content-Length before the first byte
or while a chunked body streams past the limit), or max_uploads bodies
already in progress (503).  The refusal is sent at once; the rest of the
body is read and dropped for a short while (as nginx's lingering close
does), so the client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence
from io import BytesIO
from tempfile import SpooledTemporaryFile
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.server import Request

from pymager_tx.core.errors import PymagerError, StorageFull, StorageUnavailable
from pymager_tx.core.problems import BAD_REQUEST, METHOD_NOT_ALLOWED, Problem, problem_for
from pymager_tx.http.access_log import log_refusal
from pymager_tx.http.answers import answer_with_problem, refusal
from pymager_tx.http.guards import refusal_headers
from pymager_tx.http.metrics import NO_ROUTE, method_label

if TYPE_CHECKING:
    from pymager_tx.http.site import PymagerSite

_LINGER_SECONDS = 5.0
# Bodies up to this size stay in memory; larger ones are written to disk.
IN_MEMORY_BODY_BYTES = 64 * 1024

_log = Logger(namespace="pymager_tx.http.requests")


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
            site.gate.admit(authorization, length)
        except PymagerError as error:
            self._refuse(problem_for(error), error.detail, refusal_headers(error))
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
            self._site.gate.release()

    def discard_body(self) -> None:
        """Drop the body received so far (the request will not be answered)."""
        self._body.close()
        self._body = self.content = BytesIO()
        self._give_back_slot()

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        try:
            self._site.gate.check_received(self._body.tell() + len(data))
        except PymagerError as error:
            self._refuse(problem_for(error), error.detail)
            return
        try:
            self._body.write(data)
        except OSError as error:
            # The upload directory cannot take the body (its disk is full,
            # or it was removed under the running server): a 503 for the
            # client, the reason for the operator.
            refused = (
                StorageFull("the server has no room for this upload now; try again later")
                if error.errno == errno.ENOSPC
                else StorageUnavailable("the upload could not be received; try again later")
            )
            _log.error("Could not spool an upload's body: {reason}", reason=str(error))
            self._refuse(problem_for(refused), refused.detail, refusal_headers(refused))

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
        answer = refusal(problem, detail, headers)
        channel.transport.write(answer)
        channel.persistent = False
        self._linger = self._site.reactor.callLater(_LINGER_SECONDS, channel.transport.abortConnection)
        self._site.metrics.http_request(
            method_label(getattr(channel, "_command", None)),
            NO_ROUTE,
            problem.status,
            self._site.reactor.seconds() - self.started_at,
        )
        log_refusal(
            getattr(self.getClientAddress(), "host", "-"),
            getattr(channel, "_command", b"-"),
            getattr(channel, "_path", b"-"),
            problem.status,
            len(answer),
            self.requestHeaders.getRawHeaders(b"user-agent", [None])[-1],
            (self._site.reactor.seconds() - self.started_at) * 1000,
            detail,
        )

    def connectionLost(self, reason: Any) -> None:
        self._stop_lingering()
        super().connectionLost(reason)

    def _stop_lingering(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
