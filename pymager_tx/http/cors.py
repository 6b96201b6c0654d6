"""
CORS (the Fetch standard's cross-origin checks) for browsers that read
images with fetch() or upload them with a write token.

With `[http] cors_origins` empty (the default) nothing here adds a header.
Otherwise an answer to a listed origin carries Access-Control-Allow-Origin
(that origin, or `*` when "*" is listed) and exposes the headers a script
needs (ETag, Location, Content-Range, ...); where origins are listed one by
one, every answer carries Vary: Origin, since it depends on who asks.  A
preflight (OPTIONS with Origin and Access-Control-Request-Method) from a
listed origin, for a path the API serves, answers 204 with the methods the
path takes and the headers an upload with a token sends; any other OPTIONS
is left to the routes (405, as before).  An origin not listed gets no CORS
header at all, so the browser keeps its answers from the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest

from pymager_tx.http.answers import header_text
from pymager_tx.http.vary import add_vary

ANY_ORIGIN = "*"
# What a browser may send beyond the CORS-safelisted headers: a write token,
# an upload's type, and the conditions and ranges of reads.
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, If-Modified-Since, If-Range, Range"
# What a script may read of an answer beyond the CORS-safelisted headers.
EXPOSED_HEADERS = "Accept-Ranges, Content-Range, ETag, Last-Modified, Location, Retry-After, WWW-Authenticate"


@dataclass(frozen=True)
class CorsPolicy:
    # Origins as browsers send them ("https://app.example.com"), or "*".
    origins: frozenset[str] = frozenset()
    max_age: int = 600  # seconds a browser may keep a preflight's answer

    @classmethod
    def of(cls, origins: Iterable[str], max_age: int) -> CorsPolicy:
        return cls(frozenset(origin.lower() for origin in origins), max_age)

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allowed_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin for a request from origin, None
        when it gets no CORS headers."""
        if origin is None:
            return None
        if ANY_ORIGIN in self.origins:
            return ANY_ORIGIN
        return origin if origin.lower() in self.origins else None

    def decorate(self, request: IRequest) -> None:
        """The CORS headers of an actual (not preflight) request's answer."""
        if not self.enabled:
            return
        if ANY_ORIGIN not in self.origins:
            add_vary(request, "Origin")
        allowed = self.allowed_origin(header_text(request, b"origin"))
        if allowed is not None:
            request.setHeader(b"Access-Control-Allow-Origin", allowed.encode("latin-1"))
            request.setHeader(b"Access-Control-Expose-Headers", EXPOSED_HEADERS.encode("ascii"))

    def preflight(self, request: IRequest, methods_of: Callable[[str], list[str]]) -> bytes | None:
        """The answer to a preflight from a listed origin for a path that
        methods_of (path -> the methods its routes take) knows; None for
        any other request, which the routes answer."""
        if not self.enabled or request.method != b"OPTIONS":
            return None
        if request.getHeader(b"access-control-request-method") is None:
            return None
        allowed = self.allowed_origin(header_text(request, b"origin"))
        if allowed is None:
            return None
        methods = methods_of(unquote_to_bytes(request.path).decode("utf-8", "replace"))
        if not methods:
            return None
        request.setResponseCode(204)
        if allowed != ANY_ORIGIN:
            add_vary(request, "Origin")
        request.setHeader(b"Access-Control-Allow-Origin", allowed.encode("latin-1"))
        request.setHeader(b"Access-Control-Allow-Methods", ", ".join(sorted(methods)).encode("ascii"))
        request.setHeader(b"Access-Control-Allow-Headers", ALLOWED_HEADERS.encode("ascii"))
        request.setHeader(b"Access-Control-Max-Age", b"%d" % self.max_age)
        return b""
