"""
The client's exchange with the service: one request, sent with the client's
headers and token, its answer waited for within the client's timeout, a
refusal raised as its ProblemError, and the whole tried again after a 503 or
a connection error, as often and as late as the client's settings allow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import treq
from treq.client import HTTPClient
from twisted.internet import error as net
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Cooperator, deferLater
from twisted.web.client import RequestTransmissionFailed, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pymager_tx.client.answers import discard
from pymager_tx.client.bodies import Body
from pymager_tx.client.errors import ProblemError, Unauthorized, error_for, retry_after

T = TypeVar("T")

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})
# Failures of the connection, not answers of the service: the same request
# may well work on another connection.
_CONNECTION_ERRORS = (
    net.ConnectError,
    net.ConnectionClosed,
    ResponseFailed,
    RequestTransmissionFailed,
    TimeoutError,
)
USER_AGENT = "pymager-tx-client"


class Exchange:
    """Requests through http (a treq HTTPClient, or a stub of one) on reactor,
    with PymagerClient's token, retries, backoff, max_delay and timeout."""

    def __init__(
        self,
        http: HTTPClient,
        reactor: Any,
        token: str | None,
        *,
        retries: int,
        backoff: float,
        max_delay: float,
        timeout: float | None,
    ) -> None:
        self.http = http
        self._reactor: Any = reactor
        self._token = token
        self._retries = retries
        self._backoff = backoff
        self._max_delay = max_delay
        self._timeout = timeout
        # Upload streams are read a part at a time on this reactor's turns.
        self._cooperator = Cooperator(scheduler=lambda work: self._reactor.callLater(0, work))

    async def call(
        self,
        method: str,
        url: str,
        read: Callable[..., Awaitable[T]],
        *,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
        retry: bool = True,
        with_url: bool = False,
        read_retryable: bool = True,
        guarded: bool = False,
    ) -> T:
        """read's result of the answer to method at url (read is given the
        url too when with_url), the request tried again as it may be;
        guarded: a read that needs the token too (the listing)."""
        retryable = retry and (method in _IDEMPOTENT or body is None or body.replayable)
        attempt = 0
        while True:
            delay = self._backoff * 2**attempt
            may_retry = retryable and attempt < self._retries
            try:
                response = await self._send(method, url, headers or {}, body, guarded)
            except _CONNECTION_ERRORS:
                if not may_retry:
                    raise
            else:
                if response.code == 503 and may_retry:
                    await discard(response)
                    delay = _or(retry_after(response.headers), delay)
                elif response.code >= 400:
                    raise await self._refusal(response, method)
                else:
                    try:
                        return await (read(response, url) if with_url else read(response))
                    except _CONNECTION_ERRORS:
                        if not (may_retry and read_retryable):
                            raise
            attempt += 1
            await deferLater(self._reactor, min(delay, self._max_delay))

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: Body | None, guarded: bool = False
    ) -> IResponse:
        sent = Headers({"User-Agent": [USER_AGENT]})
        for name, value in headers.items():
            sent.setRawHeaders(name, [value])
        if (guarded or method not in ("GET", "HEAD")) and self._token:
            sent.setRawHeaders("Authorization", [f"Bearer {self._token}"])
        data: Any = None
        if body is not None:
            # treq.testing.StubTreq takes bytes only (and so no streams).
            raw = body.data is not None and not isinstance(self.http, HTTPClient)
            data = body.data if raw else body.producer(self._cooperator)
        answer = self.http.request(
            method,
            url,
            headers=sent,
            data=data,
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        response: IResponse = await self.timed(cast("Deferred[IResponse]", answer))
        return response

    async def _refusal(self, response: IResponse, method: str) -> ProblemError:
        body = b"" if method == "HEAD" else await self.timed(treq.content(response))
        phrase = response.phrase.decode("latin-1", "replace") if response.phrase else ""
        refusal = error_for(response.code, phrase, response.headers, body)
        if isinstance(refusal, Unauthorized):
            refusal.token_given = bool(self._token)
        return refusal

    async def timed(self, work: Deferred[T]) -> T:
        """work's result, or TimeoutError once the client's timeout passed."""
        if self._timeout is None:
            return await work
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            work.cancel()

        call = self._reactor.callLater(self._timeout, expire)
        try:
            return await work
        except Exception:
            if expired:
                # Cancelled by us: an Agent says ResponseNeverReceived, which it was not.
                raise TimeoutError(f"no answer within {self._timeout} seconds") from None
            raise
        finally:
            if call.active():
                call.cancel()


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
