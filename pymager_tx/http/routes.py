"""
The REST interface: thin Klein routes over the service's interface
(pymager_tx.app.api.ImageServiceAPI).

Routes live on the class and state on the instance (Klein's non-global
style).  Every refusal is a domain error mapped once, in pymager_tx.core.problems,
to an application/problem+json answer; nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from pymager_tx.app.api import Found, ImageServiceAPI, StoredImage
from pymager_tx.core.errors import Overloaded, PymagerError, Unavailable
from pymager_tx.core.model import ImageId, OriginalRecord, StoredFile
from pymager_tx.core.negotiation import AUTO_EXTENSION
from pymager_tx.core.problems import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    UNAVAILABLE,
    Problem,
    problem_for,
)
from pymager_tx.http.accel import AccelRedirect
from pymager_tx.http.answers import answer_with_problem, header_text
from pymager_tx.http.conditional import not_modified, set_validators, strong_etag
from pymager_tx.http.cors import CorsPolicy
from pymager_tx.http.guards import WriteTokens, refusal_headers
from pymager_tx.http.home import content_security_policy, home_bytes
from pymager_tx.http.meta import answer_meta, meta_document, read_meta_change
from pymager_tx.http.metrics import metrics_page
from pymager_tx.http.openapi import document_bytes
from pymager_tx.http.ranges import ByteRange, requested_range
from pymager_tx.http.signatures import UrlSignatures
from pymager_tx.http.streaming import BlobSender
from pymager_tx.http.uploads import image_from_body, image_from_form
from pymager_tx.http.vary import add_vary
from pymager_tx.ports import Offload

# RFC 9110 methods; any other is 501, whatever its route.
_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"}
)
# Larger images are sent from storage a part at a time, as the client reads.
_WHOLE_BYTES = 256 * 1024
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class HttpPolicy:
    cache_control: str = "public, max-age=86400"
    # Base of absolute URLs (Location), e.g. "https://images.example.com";
    # empty: taken from the request's Host header.
    public_url: str = ""
    # Origins whose browsers may read answers and send preflights (none: no CORS).
    cors: CorsPolicy = field(default_factory=CorsPolicy)
    # nginx's internal location of the files directory: GETs answer
    # X-Accel-Redirect instead of the bytes (pymager_tx.http.accel); empty: off.
    accel_redirect_prefix: str = ""


class ImageAPI:
    app = Klein()
    # "/original//x" is no other path: 404, not a redirect to "/original/x".
    app.url_map.merge_slashes = False
    log = Logger()

    def __init__(
        self,
        service: ImageServiceAPI,
        tokens: WriteTokens,
        offload: Offload,
        policy: HttpPolicy | None = None,
        signatures: UrlSignatures | None = None,
    ) -> None:
        """signatures: the check of signed derived URLs (default: no keys,
        every signed URL refused)."""
        self._service = service
        self._tokens = tokens
        self._offload = offload
        self._policy = policy or HttpPolicy()
        self._signatures = signatures or UrlSignatures()
        prefix = self._policy.accel_redirect_prefix
        self._accel = AccelRedirect(prefix) if prefix else None

    def resource(self) -> IResource:
        """The root resource to serve."""
        return _StrictPaths(self.app.resource(), self._policy.cors, self._methods_of)

    def _methods_of(self, path: str) -> list[str]:
        """The methods the routes take at path; [] where none serves it."""
        try:
            return sorted(self.app.url_map.bind("localhost").allowed_methods(path))
        except HTTPException:
            return []

    # Originals

    @app.route("/original/<string:image_id>", methods=["GET", "HEAD"])
    async def get_original(self, request: IRequest, image_id: str) -> bytes:
        # The record first: a revalidation or a HEAD never reads the file.
        found = await self._service.original(ImageId(image_id))
        if _is_head(request) or _is_conditional(request):
            # Answers that may send no bytes give a GET's answer all the
            # same if the file is lost.
            await found.confirm()
        return await self._answer(request, found)

    @app.route("/original/<string:image_id>", methods=["POST", "PUT"])
    async def put_original(self, request: IRequest, image_id: str) -> bytes:
        self._tokens.check(request.getHeader(b"authorization"))
        valid_id = ImageId(image_id)
        content_type = header_text(request, b"content-type")
        parse = image_from_form if request.method == b"POST" else image_from_body
        data = await self._offload(_read_body, request, parse, content_type)
        # Once started, an upload finishes whether or not its client waits.
        record = await self._service.store_original(valid_id, data, _arrival(request))
        location = self._absolute_url(request, f"/original/{quote(record.image_id)}")
        request.setResponseCode(201)
        request.setHeader(b"Location", location.encode("ascii"))
        return _json(request, _describe(record, location))

    @app.route("/original/<string:image_id>", methods=["DELETE"])
    async def delete_original(self, request: IRequest, image_id: str) -> bytes:
        self._tokens.check(request.getHeader(b"authorization"))
        valid_id = ImageId(image_id)
        await self._service.delete_original(valid_id)
        request.setResponseCode(204)
        return b""

    # Derived images

    @app.route("/derived/<string:name>", methods=["GET", "HEAD"])
    async def get_derived(self, request: IRequest, name: str) -> bytes:
        found = await self._service.derived(name, _arrival(request), _negotiated(request, name))
        return await self._answer(request, found)

    @app.route("/derived/<string:signature>/<string:name>", methods=["GET", "HEAD"])
    async def get_signed_derived(self, request: IRequest, signature: str, name: str) -> bytes:
        """Any size within the signed bounds, for a name signed with a URL
        signing key (pymager_tx.core.signing); checked before anything else."""
        self._signatures.check(signature, name)
        accept = _negotiated(request, name)
        found = await self._service.derived(name, _arrival(request), accept, signed=True)
        return await self._answer(request, found)

    # Metadata (pymager_tx.http.meta)

    @app.route("/meta/<string:image_id>", methods=["GET", "HEAD"])
    async def get_meta(self, request: IRequest, image_id: str) -> bytes:
        meta = await self._service.meta(ImageId(image_id), _arrival(request))
        return answer_meta(request, meta_document(meta, lambda path: self._absolute_url(request, path)))

    @app.route("/meta/<string:image_id>", methods=["PATCH"])
    async def patch_meta(self, request: IRequest, image_id: str) -> bytes:
        self._tokens.check(request.getHeader(b"authorization"))
        valid_id = ImageId(image_id)
        change = await self._offload(read_meta_change, header_text(request, b"content-type"), request.content)
        if change.sets_focal_point:
            meta = await self._service.set_focal_point(valid_id, change.focal_point)
        else:
            meta = await self._service.meta(valid_id, _arrival(request))
        return answer_meta(request, meta_document(meta, lambda path: self._absolute_url(request, path)))

    # Operations

    @app.route("/healthz", methods=["GET", "HEAD"])
    async def health(self, request: IRequest) -> bytes:
        """200 when the database answers; for systemd and liveness probes.
        It says how busy the image threads are, but stays 200 when they are:
        a busy process is alive (see /readyz)."""
        return await self._health(request, ready=False)

    @app.route("/readyz", methods=["GET", "HEAD"])
    async def readiness(self, request: IRequest) -> bytes:
        """/healthz, but 503 too while the image queue is full: for a load
        balancer, to send new work elsewhere until this process catches up."""
        return await self._health(request, ready=True)

    # About

    @app.route("/openapi.json", methods=["GET", "HEAD"])
    def openapi(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 description of this API (pymager_tx.http.openapi)."""
        request.setHeader(b"Cache-Control", b"no-cache")
        return _body(request, b"application/json", document_bytes())

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request: IRequest) -> bytes:
        """A page for a person, rendered from the same document; no scripts."""
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Security-Policy", content_security_policy().encode("ascii"))
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return _body(request, b"text/html; charset=utf-8", home_bytes())

    async def _health(self, request: IRequest, ready: bool) -> bytes:
        load = self._service.image_load()
        if ready and load is not None and load["full"]:
            request.setHeader(b"Retry-After", b"%d" % Overloaded.retry_after)
            detail = f"every image thread is busy and {load['queued']} jobs wait; send work elsewhere"
            return answer_with_problem(request, problem_for(Overloaded(detail)), detail)
        try:
            await (self._service.check_ready() if ready else self._service.check_health())
        except CancelledError:
            raise  # the client left: nothing failed
        except Unavailable as error:
            self.log.warn("Health check failed: {reason}", reason=error.reason)
            request.setHeader(b"Retry-After", b"%d" % error.retry_after)
            return answer_with_problem(request, problem_for(error), error.detail)
        except Exception:
            self.log.failure("Health check failed")
            request.setHeader(b"Retry-After", b"%d" % Unavailable.retry_after)
            return answer_with_problem(request, UNAVAILABLE, "the metadata database does not answer")
        request.setHeader(b"Cache-Control", b"no-store")
        document: dict[str, object] = {"status": "ok"}
        if load is not None:
            document["images"] = load
        return _json(request, document)

    @app.route("/metrics", methods=["GET", "HEAD"])
    async def metrics(self, request: IRequest) -> bytes:
        """The Prometheus scrape (pymager_tx.http.metrics)."""
        return await metrics_page(request)

    # Answers

    async def _answer(self, request: IRequest, found: Found) -> bytes:
        """A 304, a HEAD's headers, the image, or the range of it the
        request asks for (pymager_tx.http.ranges)."""
        record = found.record
        self._set_validators(request, record)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Accept-Ranges", b"bytes")
        etag = strong_etag(record.sha256)
        if not_modified(request, etag, record.created_at):
            request.setResponseCode(304)
            return b""
        if _is_head(request):
            return self._send_image(request, StoredImage(record, None))
        if self._accel is not None:
            await found.confirm()
            return self._accel.answer(request, record)
        # Judged before the bytes are read: a 416 reads nothing.
        wanted = requested_range(request, record.byte_length, etag, record.created_at)
        stored = await found.body(whole_up_to=_WHOLE_BYTES)
        if stored.record != record:
            # Derived again meanwhile (its file was lost, or a new upload
            # took the ID): the headers describe the bytes sent, all of them.
            self._set_validators(request, stored.record)
            wanted = None
        if stored.reader is not None:
            self._send_image(request, stored, wanted)
            if wanted is not None:
                try:
                    await stored.reader.skip(wanted.first)
                except BaseException:
                    await stored.reader.close()
                    raise
            # Sent as the client takes it; Klein finishes the request after.
            length = None if wanted is None else wanted.length
            await BlobSender(stored.reader, request, length).send()  # type: ignore[arg-type]
            return b""
        return self._send_image(request, stored, wanted)

    def _set_validators(self, request: IRequest, record: StoredFile) -> None:
        set_validators(request, strong_etag(record.sha256), record.created_at, self._policy.cache_control)

    def _send_image(self, request: IRequest, stored: StoredImage, wanted: ByteRange | None = None) -> bytes:
        record = stored.record
        request.setHeader(b"Content-Type", record.media_type.encode("ascii"))
        if wanted is not None:
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", wanted.content_range())
            request.setHeader(b"Content-Length", b"%d" % wanted.length)
            return b"" if stored.data is None else stored.data[wanted.first : wanted.last + 1]
        # Set explicitly, so HEAD (which sends no body) announces what GET sends.
        request.setHeader(b"Content-Length", b"%d" % record.byte_length)
        return stored.data or b""

    def _absolute_url(self, request: IRequest, path: str) -> str:
        if self._policy.public_url:
            return self._policy.public_url.rstrip("/") + path
        scheme = "https" if request.isSecure() else "http"
        host = header_text(request, b"host")
        if host is None or not _HOST.fullmatch(host):
            address = request.getHost()
            name = getattr(address, "host", "localhost")
            host = f"[{name}]" if ":" in name else name
            host += f":{getattr(address, 'port', 80)}"
        return f"{scheme}://{host}{path}"

    # Errors, most specific first: Klein tries handlers in this order.

    @app.handle_errors(PymagerError)
    def domain_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, PymagerError)
        for name, value in refusal_headers(error):
            request.setHeader(name, value)
        if isinstance(error, Unavailable) and not isinstance(error, Overloaded):
            # Overload is counted in the access log; a warning per refusal
            # would cost the reactor most when it is busiest.
            self.log.warn(
                "{method} {uri} failed: {reason}",
                method=request.method.decode("ascii", "replace"),
                uri=request.uri.decode("ascii", "replace"),
                reason=error.reason,
            )
        return answer_with_problem(request, problem_for(error), error.detail)

    @app.handle_errors(NotFound)
    def unknown_path(self, request: IRequest, failure: Failure) -> bytes:
        return answer_with_problem(request, NOT_FOUND, "nothing is served at this path")

    @app.handle_errors(MethodNotAllowed)
    def wrong_method(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, MethodNotAllowed)
        allowed = sorted(error.valid_methods or ())
        request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
        method = request.method.decode("ascii", "replace")
        return answer_with_problem(
            request, METHOD_NOT_ALLOWED, f"{method} is not allowed here; allowed: {', '.join(allowed)}"
        )

    @app.handle_errors(HTTPException)
    def routing_answer(self, request: IRequest, failure: Failure) -> bytes:
        # Werkzeug's other routing outcomes, such as a redirect to add a slash.
        error = failure.value
        assert isinstance(error, HTTPException)
        for name, value in error.get_response().headers:
            if name.lower() not in ("content-type", "content-length"):
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        return answer_with_problem(request, *_routing_problem(error))

    @app.handle_errors(CancelledError)
    def client_left(self, request: IRequest, failure: Failure) -> bytes:
        # Klein cancels a handler whose client has gone: nothing failed, and
        # there is no one to answer.
        return b""

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure(
            "Unexpected failure answering {method} {uri}",
            failure,
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace"),
        )
        detail = "an unexpected error occurred; it has been logged"
        return answer_with_problem(request, INTERNAL_ERROR, detail)


class _StrictPaths(Resource):
    """Answer what Klein would mishandle before any route runs: a path (once
    percent-decoded) or Host that is not UTF-8, which it answers in plain
    text with a logged traceback; a Host its URL map refuses, which becomes
    a 500; and a path with an empty segment, whose leading one it drops."""

    isLeaf = True

    def __init__(
        self,
        wrapped: IResource,
        cors: CorsPolicy | None = None,
        methods_of: Callable[[str], list[str]] | None = None,
    ) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._cors = cors or CorsPolicy()
        self._methods_of = methods_of or (lambda path: [])

    def render(self, request: IRequest) -> Any:
        if request.method not in _METHODS:
            # Methods are case-sensitive; Werkzeug would route "post" as POST.
            method = request.method.decode("ascii", "backslashreplace")
            return answer_with_problem(
                request, NOT_IMPLEMENTED, f"the method {method!r} is not one this server knows"
            )
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        if len(hosts) > 1 or (not hosts and getattr(request, "clientproto", None) == b"HTTP/1.1"):
            detail = "an HTTP/1.1 request has exactly one Host header"
            return answer_with_problem(request, BAD_REQUEST, detail)
        try:
            unquote_to_bytes(request.path).decode("utf-8")
            (request.getHeader(b"host") or b"").decode("utf-8")
        except UnicodeDecodeError:
            detail = "the URL path (percent-decoded) and the Host header must be UTF-8"
            return answer_with_problem(request, BAD_REQUEST, detail)
        if b"//" in request.path:
            return answer_with_problem(request, NOT_FOUND, "nothing is served at this path")
        preflight = self._cors.preflight(request, self._methods_of)
        if preflight is not None:
            return preflight
        self._cors.decorate(request)
        try:
            return self._wrapped.render(request)
        except HTTPException as error:  # raised while binding the URL map
            return answer_with_problem(request, *_routing_problem(error))


def _routing_problem(error: HTTPException) -> tuple[Problem, str]:
    """A problem for one of Werkzeug's own routing answers (BadHost, ...)."""
    return Problem(error.code or 400, "bad-request", error.name), error.description or error.name


def _read_body(request: IRequest, parse: Any, content_type: str | None) -> bytes:
    content = request.content
    content.seek(0)
    data: bytes = parse(content_type, content)
    return data


def _describe(record: OriginalRecord, location: str) -> dict[str, object]:
    return {
        "id": record.image_id,
        "url": location,
        "format": record.format,
        "media_type": record.media_type,
        "width": record.width,
        "height": record.height,
        "byte_length": record.byte_length,
        "sha256": record.sha256,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
    }


def _json(request: IRequest, document: dict[str, object]) -> bytes:
    return _body(request, b"application/json", json.dumps(document).encode("utf-8"))


def _body(request: IRequest, content_type: bytes, body: bytes) -> bytes:
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _negotiated(request: IRequest, name: str) -> str | None:
    """The Accept header a ".auto" name is negotiated with (None for
    others); every answer to one, refusals too, varies with it."""
    if not name.lower().endswith("." + AUTO_EXTENSION):
        return None
    add_vary(request, "Accept")
    return header_text(request, b"accept")


def _arrival(request: IRequest) -> float | None:
    """When the request arrived (time.monotonic()), as the site records it."""
    arrived: float | None = getattr(request, "arrived", None)
    return arrived


def _is_conditional(request: IRequest) -> bool:
    return (
        request.getHeader(b"if-none-match") is not None or request.getHeader(b"if-modified-since") is not None
    )


def _is_head(request: IRequest) -> bool:
    return bool(request.method == b"HEAD")
