"""
What is answered before any route runs: methods no RFC defines, a missing
or doubled Host, paths and hosts that are not UTF-8, empty path segments,
and CORS preflights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException

from pymager_tx.core.problems import BAD_REQUEST, NOT_FOUND, NOT_IMPLEMENTED, Problem
from pymager_tx.http.answers import answer_with_problem
from pymager_tx.http.cors import CorsPolicy

# RFC 9110 methods; any other is 501, whatever its route.
METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"})


class StrictPaths(Resource):
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
        if request.method not in METHODS:
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
            return answer_with_problem(request, *routing_problem(error))


def routing_problem(error: HTTPException) -> tuple[Problem, str]:
    """A problem for one of Werkzeug's own routing answers (BadHost, ...)."""
    return Problem(error.code or 400, "bad-request", error.name), error.description or error.name
