"""
The CDN purge a delete or a replacement sends, over HTTP with treq, in the
background (ports.ICachePurger).

A purge is queued and sent at once when fewer than `concurrency` are under
way; a failed attempt (a connection error, a timeout, an answer other than
2xx) is tried again after backoff, 2 x backoff, 4 x backoff ... until
`attempts` were made, then given up and logged.  Queued, waiting and sent
purges together are at most `max_queue`: past it a new one is logged and
dropped, so a flood of deletes cannot grow memory without bound.  A purge
of an ID already queued is the same purge.  Nothing here ever fails or
delays the delete that asked for it.

The log names the image, the attempt and the answer's status, never the URL
(it may carry credentials) nor a header (the token).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pymager_tx.ports import ICachePurger


@dataclass(frozen=True)
class PurgeRequest:
    """The request that purges one image: {id} in url, body and header
    values stands for its ID, {token} in header values for token."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    token: str = field(default="", repr=False)

    def for_image(self, image_id: str) -> tuple[str, Headers, bytes | None]:
        # IDs are letters, digits, '_' and '-': safe in a URL, a header and JSON.
        headers = Headers(
            {
                name.encode("ascii"): [
                    value.replace("{token}", self.token).replace("{id}", image_id).encode("ascii")
                ]
                for name, value in self.headers.items()
            }
        )
        body = self.body.replace("{id}", image_id).encode("utf-8") if self.body else None
        return self.url.replace("{id}", image_id), headers, body

    @property
    def host(self) -> str:
        """Where purges go, for the log: no user, password, path or query."""
        return urlsplit(self.url).hostname or "the CDN"


@implementer(ICachePurger)
class HttpCachePurger:
    log = Logger()

    def __init__(
        self,
        request: PurgeRequest,
        http: HTTPClient,
        clock: IReactorTime,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
        max_queue: int = 10_000,
        concurrency: int = 4,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        """clock: for the waits between attempts (the reactor; a Clock in
        tests); the requests themselves go through http; pool: http's
        connections, closed at stop."""
        self._pool = pool
        self._request = request
        self._http = http
        self._clock = clock
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._max_queue = max_queue
        self._concurrency = concurrency
        self._queue: deque[tuple[str, int]] = deque()  # (image ID, attempt), to send now
        self._queued: set[str] = set()
        self._waiting: dict[IDelayedCall, str] = {}  # the next attempts of failed ones
        self._sending: set[Deferred[None]] = set()  # to cancel at shutdown
        self._unanswered = 0  # purges sent whose outcome is not known yet
        self._stopped = False

    @property
    def pending(self) -> int:
        """Purges queued, waiting for another attempt, or under way."""
        return len(self._queue) + len(self._waiting) + self._unanswered

    def purge(self, image_id: str) -> None:
        if self._stopped or image_id in self._queued:
            return
        if self.pending >= self._max_queue:
            self.log.warn(
                "Dropped the CDN purge of {image_id}: {pending} purges are pending already",
                image_id=image_id,
                pending=self.pending,
            )
            return
        self._enqueue(image_id, 1)

    def _enqueue(self, image_id: str, attempt: int) -> None:
        self._queue.append((image_id, attempt))
        self._queued.add(image_id)
        self._pump()

    def _pump(self) -> None:
        while self._queue and self._unanswered < self._concurrency and not self._stopped:
            image_id, attempt = self._queue.popleft()
            self._queued.discard(image_id)
            self._unanswered += 1
            sending = Deferred.fromCoroutine(self._send(image_id, attempt))
            self._sending.add(sending)
            sending.addBoth(self._sent, sending)

    def _sent(self, result: object, sending: Deferred[None]) -> None:
        self._sending.discard(sending)
        if isinstance(result, Failure) and not result.check(CancelledError):
            self.log.failure("The CDN purge failed unexpectedly", result)
        self._pump()

    async def _send(self, image_id: str, attempt: int) -> None:
        url, headers, body = self._request.for_image(image_id)
        try:
            response = await self._http.request(
                self._request.method, url, headers=headers, data=body, timeout=self._timeout
            )
            await treq.content(response)
            failure = None if 200 <= response.code < 300 else f"status {response.code}"
        except CancelledError:
            failure = None if self._stopped else "timed out"
            if self._stopped:
                self._unanswered -= 1
                return
        except Exception as error:
            failure = type(error).__name__
        # Counted as answered before anything is logged or scheduled.
        self._unanswered -= 1
        if failure is None:
            self.log.info("Purged {image_id} from the CDN", image_id=image_id, attempt=attempt)
            return
        if attempt >= self._attempts or self._stopped:
            self.log.error(
                "Gave up purging {image_id} from the CDN at {host} after {attempt} attempts: {reason}",
                image_id=image_id,
                host=self._request.host,
                attempt=attempt,
                reason=failure,
            )
            return
        delay = self._backoff * 2 ** (attempt - 1)
        call = self._clock.callLater(delay, self._retry, image_id, attempt + 1)
        self._waiting[call] = image_id
        self.log.warn(
            "Could not purge {image_id} from the CDN at {host} ({reason}); trying again in {delay:g}s",
            image_id=image_id,
            host=self._request.host,
            reason=failure,
            delay=delay,
            attempt=attempt,
        )

    def _retry(self, image_id: str, attempt: int) -> None:
        for call, waiting in list(self._waiting.items()):
            if waiting == image_id and not call.active():
                del self._waiting[call]
        self._enqueue(image_id, attempt)

    def stop(self) -> Deferred[object]:
        """Send nothing more: pending purges are dropped (logged), those
        under way cancelled; fires once they ended."""
        self._stopped = True
        if self.pending:
            self.log.info("Dropping {pending} pending CDN purges at shutdown", pending=self.pending)
        for call in self._waiting:
            if call.active():
                call.cancel()
        self._waiting.clear()
        self._queue.clear()
        self._queued.clear()
        sending = list(self._sending)
        for each in sending:
            each.cancel()
        ended: Deferred[object] = succeed(None)
        if sending:
            ended = DeferredList(sending, consumeErrors=True).addCallback(lambda _: None)
        if self._pool is not None:
            pool = self._pool
            ended.addCallback(lambda _: pool.closeCachedConnections())
        return ended.addCallback(lambda _: None)
