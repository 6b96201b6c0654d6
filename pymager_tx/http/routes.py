"""
The REST interface: thin Klein routes over the service's interface
(pymager_tx.app.api.ImageServiceAPI).

Routes live on the class and state on the instance (Klein's non-global
style).  Every refusal is a domain error mapped once, in pymager_tx.core.problems,
to an application/problem+json answer; nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from pymager_tx.app.api import Found, ImageServiceAPI, StoredImage
from pymager_tx.core.errors import Overloaded, PymagerError, Unavailable
from pymager_tx.core.model import ImageId, OriginalRecord, StoredFile
from pymager_tx.core.negotiation import AUTO_EXTENSION
from pymager_tx.core.problems import (
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    problem_for,
)
from pymager_tx.http.accel import AccelRedirect
from pymager_tx.http.answers import answer_with_problem, header_text
from pymager_tx.http.conditional import not_modified, set_validators, strong_etag
from pymager_tx.http.cors import CorsPolicy
from pymager_tx.http.guards import WriteTokens, refusal_headers
from pymager_tx.http.health import answer_health
from pymager_tx.http.home import content_security_policy, home_bytes
from pymager_tx.http.listing import listing_document, listing_query
from pymager_tx.http.locations import absolute_url
from pymager_tx.http.meta import answer_meta, meta_document, read_meta_change
from pymager_tx.http.metrics import metrics_page
from pymager_tx.http.openapi import document_bytes
from pymager_tx.http.preconditions import if_match
from pymager_tx.http.ranges import ByteRange, requested_range
from pymager_tx.http.signatures import UrlSignatures
from pymager_tx.http.streaming import BlobSender
from pymager_tx.http.strict_paths import StrictPaths, routing_problem
from pymager_tx.http.uploads import image_from_body, image_from_form
from pymager_tx.http.vary import add_vary
from pymager_tx.ports import Offload

# Larger images are sent from storage a part at a time, as the client reads.
_WHOLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class HttpPolicy:
    cache_control: str = "public, max-age=86400"
    # Base of absolute URLs (Location), e.g. "https://images.example.com";
    # empty: taken from the request's Host header.
    public_url: str = ""
    # Headers naming the image's ID on every image answer, for a CDN to
    # purge all of one image's answers at once ([cdn] cache_tag_headers).
    cache_tag_headers: tuple[str, ...] = ("Surrogate-Key",)
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
        return StrictPaths(self.app.resource(), self._policy.cors, self._methods_of)

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
        condition = if_match(request)
        data = await self._offload(_read_body, request, parse, content_type)
        if condition is not None:
            # A replacement of what the client read: 200, or 412 when stale.
            record = await self._service.replace_original(valid_id, data, condition.etags, _arrival(request))
            request.setHeader(b"ETag", strong_etag(record.sha256).encode("ascii"))
            location = self._absolute_url(request, f"/original/{quote(record.image_id)}")
            return _json(request, _describe(record, location))
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

    @app.route("/originals", methods=["GET"])
    async def list_originals(self, request: IRequest) -> bytes:
        """A page of stored originals, in ID order; not public."""
        self._tokens.check(request.getHeader(b"authorization"))
        after, limit = listing_query(request)
        records, more = await self._service.list_originals(after, limit)
        request.setHeader(b"Cache-Control", b"no-store")
        return _json(
            request,
            listing_document(records, more, limit, lambda path: self._absolute_url(request, path), _describe),
        )

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
        return await answer_health(request, self._service, ready=False)

    @app.route("/readyz", methods=["GET", "HEAD"])
    async def readiness(self, request: IRequest) -> bytes:
        """/healthz, but 503 too while the image queue is full: for a load
        balancer, to send new work elsewhere until this process catches up."""
        return await answer_health(request, self._service, ready=True)

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
        for name in self._policy.cache_tag_headers:
            request.setHeader(name.encode("ascii"), record.image_id.encode("ascii"))
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
        return absolute_url(request, self._policy.public_url, path)

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
        return answer_with_problem(request, *routing_problem(error))

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
