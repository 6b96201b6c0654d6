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
from urllib.parse import urlencode

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse

from pymager_tx.client.answers import conditional, discard, info, nothing, read_json
from pymager_tx.client.bodies import Body, Source
from pymager_tx.client.exchange import Exchange
from pymager_tx.client.names import Signer, derived_name, derived_path, original_path
from pymager_tx.client.records import Image, ImageInfo, Meta, NotModified, Original, Page
from pymager_tx.core.model import ImageId, ResizeMode
from pymager_tx.core.signing import signer as signer_for

T = TypeVar("T")

# Where a streamed image goes: a binary file, or a function given each part.
Sink = IO[bytes] | Callable[[bytes], object]
Mode = ResizeMode | str | None


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
    signing_key: a key of the service's [security] url_signing_keys: every
    derived URL is then signed with it (GET /derived/<signature>/<name>), so
    any size within the service's signed bounds can be asked for.  Keep it
    on the back end: a page or an app that holds it can sign any size.
    signer: instead of signing_key, a function signing names (names.Signer),
    e.g. one that asks a back end for signatures.
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
        signing_key: str | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if retries < 0 or backoff < 0 or max_delay < 0:
            raise ValueError("retries, backoff and max_delay are never negative")
        if signing_key is not None:
            if signer is not None:
                raise ValueError("give signing_key or signer, not both")
            signer = signer_for(signing_key)
        self.base_url = base_url.rstrip("/")
        self._signer = signer
        self._own_pool: HTTPConnectionPool | None = None
        if http_client is None:
            if pool is None:
                pool = self._own_pool = HTTPConnectionPool(reactor, persistent=True)
            http_client = HTTPClient(Agent(reactor, pool=pool))
        self._exchange = Exchange(
            http_client,
            reactor,
            token,
            retries=retries,
            backoff=backoff,
            max_delay=max_delay,
            timeout=timeout,
        )

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

    async def _upload(
        self, image_id: str, source: Source, content_type: str | None, if_match: str | None = None
    ) -> Original:
        path = original_path(image_id)
        body = Body(source)
        try:
            headers = {"Content-Type": content_type or body.media_type()}
            if if_match is not None:
                headers["If-Match"] = if_match
            document = await self._call("PUT", path, read_json, headers=headers, body=body)
        finally:
            body.close()
        return Original.from_json(document)

    def replace(
        self, image_id: str, source: Source, etag: str, *, content_type: str | None = None
    ) -> Deferred[Original]:
        """PUT the image under image_id in place of the original served with
        etag (an Image's .etag, an Original's .sha256, or "*" for whichever
        is stored); PreconditionFailed if it changed meanwhile or is gone.
        A retried replacement that had in fact succeeded is PreconditionFailed
        too: compare the stored sha256 when it matters."""
        tag = etag if etag == "*" or etag.startswith('"') else f'"{etag}"'
        return Deferred.fromCoroutine(self._upload(image_id, source, content_type, tag))

    def list_originals(self, after: str | None = None, limit: int | None = None) -> Deferred[Page]:
        """A page of the stored originals, in ID order, after the ID
        `after` (the .following of the previous page); needs the token
        whenever the service has write tokens."""
        return Deferred.fromCoroutine(self._list(after, limit))

    async def _list(self, after: str | None, limit: int | None) -> Page:
        query = {
            name: str(value) for name, value in (("after", after), ("limit", limit)) if value is not None
        }
        if after is not None:
            ImageId(after)  # refused here, as the service would
        path = "/originals" + ("?" + urlencode(query) if query else "")
        return Page.from_json(await self._call("GET", path, read_json, guarded=True))

    def delete(self, image_id: str) -> Deferred[None]:
        """DELETE the original and every derived image of it."""
        return Deferred.fromCoroutine(self._delete(image_id))

    async def _delete(self, image_id: str) -> None:
        await self._call("DELETE", original_path(image_id), discard)

    # Metadata

    def meta(self, image_id: str) -> Deferred[Meta]:
        """GET /meta/<ID>: what the service knows of the original."""
        return Deferred.fromCoroutine(self._meta("GET", image_id))

    def set_focal_point(self, image_id: str, focal_point: tuple[float, float] | None) -> Deferred[Meta]:
        """PATCH /meta/<ID>: the point (x, y from 0 to 1 of the displayed
        picture) that crops keep in view, or None for the centre; the
        renditions cropped around the old one are removed.  Needs the token."""
        point = None if focal_point is None else {"x": focal_point[0], "y": focal_point[1]}
        return Deferred.fromCoroutine(self._meta("PATCH", image_id, {"focal_point": point}))

    async def _meta(self, method: str, image_id: str, change: dict[str, Any] | None = None) -> Meta:
        path = "/meta/" + original_path(image_id).removeprefix("/original/")
        options: dict[str, Any] = {}
        if change is not None:
            options = {
                "headers": {"Content-Type": "application/json"},
                "body": Body(json.dumps(change).encode("utf-8")),
            }
        return Meta.from_json(await self._call(method, path, read_json, **options))

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

        return await self._call("GET", path(), read, headers=conditional(etag), with_url=True)

    async def _read_image(self, response: IResponse, url: str) -> Image | NotModified:
        got = info(response, url)
        if response.code == 304:
            await discard(response)
            return NotModified(info=got)
        data: bytes = await self._exchange.timed(treq.content(response))
        return Image(data=data, **vars(got))

    # Reads, headers only

    def head_original(self, image_id: str) -> Deferred[ImageInfo]:
        return Deferred.fromCoroutine(self._head(lambda: original_path(image_id)))

    def head_derived(
        self, image_id: str, width: int, height: int, ext: str, mode: Mode = None
    ) -> Deferred[ImageInfo]:
        return Deferred.fromCoroutine(self._head(self._derived(image_id, width, height, ext, mode)))

    async def _head(self, path: Callable[[], str]) -> ImageInfo:
        async def read(response: IResponse, url: str) -> ImageInfo:
            await discard(response)
            return info(response, url)

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
            got = info(response, url)
            if response.code == 304:
                await discard(response)
                return NotModified(info=got)
            await treq.collect(response, write)
            return got

        return await self._call(
            "GET", path(), read, headers=conditional(etag), with_url=True, read_retryable=False
        )

    # Operations

    def health(self, *, ready: bool = False) -> Deferred[dict[str, Any]]:
        """GET /healthz (or /readyz): the service's own account of itself.
        A 503 is raised at once, never retried: it is the answer."""
        return Deferred.fromCoroutine(
            self._call("GET", "/readyz" if ready else "/healthz", read_json, retry=False)
        )

    def close(self) -> Deferred[None]:
        """Close the connections of the pool the client made (not of one
        it was given)."""
        if self._own_pool is None:
            return Deferred.fromCoroutine(nothing())
        return cast("Deferred[None]", self._own_pool.closeCachedConnections())

    # Paths, and the exchange (tried again as the service and the network allow)

    def _derived(self, image_id: str, width: int, height: int, ext: str, mode: Mode) -> Callable[[], str]:
        # Checked when the Deferred runs, so a bad name fails it, as a refusal would.
        return lambda: derived_path(derived_name(image_id, width, height, ext, mode), self._signer)

    async def _call(self, method: str, path: str, read: Callable[..., Awaitable[T]], **options: Any) -> T:
        """read's result of the answer to method at path (see Exchange.call)."""
        return await self._exchange.call(method, self.base_url + path, read, **options)
