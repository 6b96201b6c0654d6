"""
PymagerClient: the HTTP API of pymager-tx for Twisted programs, on treq.

Every method returns a Deferred (await it in a coroutine, or add callbacks).
Refusals raise the ProblemError subclass of their problem type.  A 503 or a
connection error is tried again, `retries` times at most, after the
Retry-After the service gave (capped at `max_delay`) or else after an
exponential backoff: always for GET, HEAD and DELETE, and for an upload
only when its body can be sent again from the start.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar, cast, overload

import treq
from treq.client import HTTPClient
from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Cooperator, deferLater
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from pymager_tx.client.bodies import Body, Source
from pymager_tx.client.errors import ProblemError, Unauthorized, error_for, retry_after
from pymager_tx.client.names import Signer, derived_name, derived_path, original_path
from pymager_tx.client.records import Image, ImageInfo, NotModified, Original
from pymager_tx.core.model import ResizeMode

T = TypeVar("T")

# Where a streamed image goes: a binary file, or a function given each part.
Sink = IO[bytes] | Callable[[bytes], object]
Mode = ResizeMode | str | None

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


class PymagerClient:
    """A client of one pymager-tx service at base_url ("http://host:port").

    token: the bearer token writes (upload, delete) send; reads never do.
    pool: a twisted.web.client.HTTPConnectionPool to share; by default the
    client makes a persistent one of its own, which close() closes.
    http_client: a treq HTTPClient (or treq.testing.StubTreq) to send
    through instead of an Agent on the pool.
    retries, backoff, max_delay: at most `retries` more attempts, the n-th
    after Retry-After or backoff * 2**n seconds, never more than max_delay.
    timeout: seconds an attempt may wait for its answer (and read it, when
    read whole); None for no limit.
    signer: for derived URLs signed by the signed-URL scheme (see names.Signer).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        pool: HTTPConnectionPool | None = None,
        reactor: Any = None,
        http_client: HTTPClient | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_delay: float = 30.0,
        timeout: float | None = 60.0,
        signer: Signer | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if retries < 0 or backoff < 0 or max_delay < 0:
            raise ValueError("retries, backoff and max_delay are never negative")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._reactor: Any = reactor
        self._retries = retries
        self._backoff = backoff
        self._max_delay = max_delay
        self._timeout = timeout
        self._signer = signer
        self._own_pool: HTTPConnectionPool | None = None
        if http_client is None:
            if pool is None:
                pool = self._own_pool = HTTPConnectionPool(reactor, persistent=True)
            http_client = HTTPClient(Agent(reactor, pool=pool))
        self._http = http_client
        # Upload streams are read a part at a time on this reactor's turns.
        self._cooperator = Cooperator(scheduler=lambda work: self._reactor.callLater(0, work))

    # Names and URLs

    def derived_name(self, image_id: str, width: int, height: int, ext: str, mode: Mode = None) -> str:
        """<ID>-<W>x<H>[-fit|-pad].<ext>, checked with the core's rules."""
        return derived_name(image_id, width, height, ext, mode)

    def derived_url(self, image_id: str, width: int, height: int, ext: str, mode: Mode = None) -> str:
        """The URL of a derived image (signed, when the client has a signer),
        for a browser, a page or a CDN."""
        name = derived_name(image_id, width, height, ext, mode)
        return self.base_url + derived_path(name, self._signer)

    def original_url(self, image_id: str) -> str:
        return self.base_url + original_path(image_id)

    # Writes

    def upload(self, image_id: str, source: Source, *, content_type: str | None = None) -> Deferred[Original]:
        """PUT the image under image_id: source is its bytes, the path of a
        file, or a binary stream (read a part at a time, from where it is, and
        left open).  Content-Type: content_type, else from the file name's
        extension, else application/octet-stream."""
        return Deferred.fromCoroutine(self._upload(image_id, source, content_type))

    async def _upload(self, image_id: str, source: Source, content_type: str | None) -> Original:
        path = original_path(image_id)
        body = Body(source)
        try:
            headers = {"Content-Type": content_type or body.media_type()}
            document = await self._call("PUT", path, _read_json, headers=headers, body=body)
        finally:
            body.close()
        return Original.from_json(document)

    def delete(self, image_id: str) -> Deferred[None]:
        """DELETE the original and every derived image of it."""
        return Deferred.fromCoroutine(self._delete(image_id))

    async def _delete(self, image_id: str) -> None:
        await self._call("DELETE", original_path(image_id), _discard)

    # Reads, whole

    @overload
    def get_original(self, image_id: str) -> Deferred[Image]: ...
    @overload
    def get_original(self, image_id: str, *, etag: str | None) -> Deferred[Image | NotModified]: ...
    def get_original(self, image_id: str, *, etag: str | None = None) -> Deferred[Any]:
        """The original, byte for byte; NotModified when etag is its ETag."""
        return Deferred.fromCoroutine(self._get(lambda: original_path(image_id), etag))

    @overload
    def get_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None
    ) -> Deferred[Image]: ...
    @overload
    def get_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None, *, etag: str | None
    ) -> Deferred[Image | NotModified]: ...
    def get_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None, *, etag: str | None = None
    ) -> Deferred[Any]:
        """A derived image (made on the service's first request for it)."""
        return Deferred.fromCoroutine(self._get(self._derived(image_id, width, height, ext, mode), etag))

    async def _get(self, path: Callable[[], str], etag: str | None) -> Image | NotModified:
        def read(response: IResponse, url: str) -> Awaitable[Image | NotModified]:
            return self._read_image(response, url)

        return await self._call("GET", path(), read, headers=_conditional(etag), with_url=True)

    async def _read_image(self, response: IResponse, url: str) -> Image | NotModified:
        info = _info(response, url)
        if response.code == 304:
            await _discard(response)
            return NotModified(info=info)
        data: bytes = await self._timed(treq.content(response))
        return Image(data=data, **vars(info))

    # Reads, headers only

    def head_original(self, image_id: str) -> Deferred[ImageInfo]:
        return Deferred.fromCoroutine(self._head(lambda: original_path(image_id)))

    def head_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None
    ) -> Deferred[ImageInfo]:
        return Deferred.fromCoroutine(self._head(self._derived(image_id, width, height, ext, mode)))

    async def _head(self, path: Callable[[], str]) -> ImageInfo:
        async def read(response: IResponse, url: str) -> ImageInfo:
            await _discard(response)
            return _info(response, url)

        return await self._call("HEAD", path(), read, with_url=True)

    # Reads, streamed

    @overload
    def stream_original(self, image_id: str, sink: Sink) -> Deferred[ImageInfo]: ...
    @overload
    def stream_original(
        self, image_id: str, sink: Sink, *, etag: str | None
    ) -> Deferred[ImageInfo | NotModified]: ...
    def stream_original(self, image_id: str, sink: Sink, *, etag: str | None = None) -> Deferred[Any]:
        """The original, written to sink (a binary file, or a function given
        each part) as it arrives, never held whole.  A failure once parts
        were written is not retried: sink holds part of the image."""
        return Deferred.fromCoroutine(self._stream(lambda: original_path(image_id), sink, etag))

    @overload
    def stream_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None, *, sink: Sink
    ) -> Deferred[ImageInfo]: ...
    @overload
    def stream_derived(
        self,
        image_id: str,
        width: int,
        height: int,
        ext: str,
        mode: Mode = None,
        *,
        sink: Sink,
        etag: str | None,
    ) -> Deferred[ImageInfo | NotModified]: ...
    def stream_derived(
        self,
        image_id: str,
        width: int,
        height: int,
        ext: str,
        mode: Mode = None,
        *,
        sink: Sink,
        etag: str | None = None,
    ) -> Deferred[Any]:
        path = self._derived(image_id, width, height, ext, mode)
        return Deferred.fromCoroutine(self._stream(path, sink, etag))

    async def _stream(self, path: Callable[[], str], sink: Sink, etag: str | None) -> ImageInfo | NotModified:
        give = sink if callable(sink) else sink.write

        def write(part: bytes) -> None:
            give(part)

        async def read(response: IResponse, url: str) -> ImageInfo | NotModified:
            info = _info(response, url)
            if response.code == 304:
                await _discard(response)
                return NotModified(info=info)
            await treq.collect(response, write)
            return info

        return await self._call(
            "GET", path(), read, headers=_conditional(etag), with_url=True, read_retryable=False
        )

    # Operations

    def health(self, *, ready: bool = False) -> Deferred[dict[str, Any]]:
        """GET /healthz (or /readyz): the service's own account of itself.
        A 503 is raised at once, never retried: it is the answer."""
        return Deferred.fromCoroutine(
            self._call("GET", "/readyz" if ready else "/healthz", _read_json, retry=False)
        )

    def close(self) -> Deferred[None]:
        """Close the connections of the pool the client made (not of one
        it was given)."""
        if self._own_pool is None:
            return Deferred.fromCoroutine(_nothing())
        return cast("Deferred[None]", self._own_pool.closeCachedConnections())

    # The exchange, tried again as the service and the network allow

    def _derived(self, image_id: str, width: int, height: int, ext: str, mode: Mode) -> Callable[[], str]:
        # Checked when the Deferred runs, so a bad name fails it, as a refusal would.
        return lambda: derived_path(derived_name(image_id, width, height, ext, mode), self._signer)

    async def _call(
        self,
        method: str,
        path: str,
        read: Callable[..., Awaitable[T]],
        *,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
        retry: bool = True,
        with_url: bool = False,
        read_retryable: bool = True,
    ) -> T:
        url = self.base_url + path
        retryable = retry and (method in _IDEMPOTENT or body is None or body.replayable)
        attempt = 0
        while True:
            delay = self._backoff * 2**attempt
            may_retry = retryable and attempt < self._retries
            try:
                response = await self._send(method, url, headers or {}, body)
            except _CONNECTION_ERRORS:
                if not may_retry:
                    raise
            else:
                if response.code == 503 and may_retry:
                    await _discard(response)
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

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> IResponse:
        sent = Headers({"User-Agent": [USER_AGENT]})
        for name, value in headers.items():
            sent.setRawHeaders(name, [value])
        if method not in ("GET", "HEAD") and self._token:
            sent.setRawHeaders("Authorization", [f"Bearer {self._token}"])
        data: Any = None
        if body is not None:
            # treq.testing.StubTreq takes bytes only (and so no streams).
            raw = body.data is not None and not isinstance(self._http, HTTPClient)
            data = body.data if raw else body.producer(self._cooperator)
        answer = self._http.request(
            method,
            url,
            headers=sent,
            data=data,
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        response: IResponse = await self._timed(cast("Deferred[IResponse]", answer))
        return response

    async def _refusal(self, response: IResponse, method: str) -> ProblemError:
        body = b"" if method == "HEAD" else await self._timed(treq.content(response))
        phrase = response.phrase.decode("latin-1", "replace") if response.phrase else ""
        refusal = error_for(response.code, phrase, response.headers, body)
        if isinstance(refusal, Unauthorized):
            refusal.token_given = bool(self._token)
        return refusal

    async def _timed(self, work: Deferred[T]) -> T:
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


def _conditional(etag: str | None) -> dict[str, str]:
    return {} if etag is None else {"If-None-Match": etag}


def _info(response: IResponse, url: str) -> ImageInfo:
    length = response.length if response.code != 304 and response.length is not UNKNOWN_LENGTH else None
    # HEAD answers announce their length as a header, and deliver nothing.
    return ImageInfo.from_headers(url, response.headers, length if length else None)


async def _read_json(response: IResponse) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await treq.content(response))
    return document


async def _discard(response: IResponse) -> None:
    try:
        await treq.collect(response, lambda _: None)
    except CancelledError:
        raise
    except ResponseFailed:
        pass  # an answer without a body to read (HEAD, 304, 204)


async def _nothing() -> None:
    return None
