"""
Metrics over HTTP: each answered request counted by its route's template,
and the scrape (GET /metrics) answered, on the main port or on a port of
its own ([metrics] listen).

The route is the template of the Klein route that matched ("/derived/<name>",
"/original/<image_id>"), never the raw path, so that a label's values stay
few whatever clients ask for.  Requests answered before a route matched
(refused while arriving, an unknown path or method, malformed HTTP) count
under the route "(none)".
"""

from __future__ import annotations

import re
from typing import Any

from klein.interfaces import IKleinRequest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

from pymager_tx.core.problems import INTERNAL_ERROR, NOT_FOUND, UNAVAILABLE
from pymager_tx.http.answers import answer_with_problem
from pymager_tx.ports import Metrics, Offload

NO_ROUTE = "(none)"
log = Logger()
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
_templates: dict[str, str] = {}


# Methods are labels as they are; any other (answered 501) is "other", and
# none yet (malformed HTTP) is "-": a label's values stay few.
_METHOD_LABELS = {
    method.encode("ascii"): method
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}


def method_label(method: bytes | None) -> str:
    if method is None:
        return "-"
    return _METHOD_LABELS.get(method, "other")


def template(rule: str) -> str:
    """ "/derived/<string:name>" -> "/derived/<name>"."""
    found = _templates.get(rule)
    if found is None:
        found = _templates[rule] = _CONVERTER.sub(r"<\1>", rule)
    return found


class Routes:
    """The route templates of a Klein app's URL map, matched segment by
    segment against a request's path: a tenth of the cost of matching the
    map again (Klein keeps no trace of the rule it matched, only the path
    segments it consumed, in request.prepath: none when no rule matched).
    A template whose converter may span segments ("path") falls back to
    the map's own matching."""

    def __init__(self, url_map: Any) -> None:
        # By (number of segments, first segment): the templates' other
        # segments (None for a variable one) and the template.
        self._index: dict[tuple[int, bytes | None], list[tuple[tuple[bytes | None, ...], str]]] = {}
        self._exact = True
        for rule in url_map.iter_rules():
            text = rule.rule
            segments = tuple(
                None if segment.startswith("<") and segment.endswith(">") else segment.encode()
                for segment in text.split("/")
            )
            if any(segment is not None and b"<" in segment for segment in segments) or re.search(
                r"<(path|any)[:(]", text
            ):
                self._exact = False
            first = segments[1] if len(segments) > 1 else None
            entries = self._index.setdefault((len(segments), first), [])
            if (segments, template(text)) not in entries:
                entries.append((segments, template(text)))

    def of(self, request: Any) -> str:
        """The template of the route request went to, or NO_ROUTE."""
        if not request.prepath:
            if request.path == b"/":
                # The root route consumes no segment: matched again, as rare as it is.
                return self._matched(request)
            return NO_ROUTE  # answered before a route matched, or none did
        if not self._exact:
            return self._matched(request)
        parts = request.path.split(b"/")
        length = len(parts)
        candidates = self._index.get((length, parts[1] if length > 1 else None), ())
        if length > 1 and (length, None) in self._index:
            candidates = [*candidates, *self._index[(length, None)]]
        for segments, found in candidates:
            for wanted, part in zip(segments, parts, strict=True):
                if (part != wanted) if wanted is not None else not part:
                    break
            else:
                return found
        return NO_ROUTE

    def _matched(self, request: Any) -> str:
        adapter = getattr(IKleinRequest(request, None), "mapper", None)
        if adapter is None:
            return NO_ROUTE
        try:
            rule, _ = adapter.match(return_rule=True)
        except HTTPException:
            return NO_ROUTE
        return template(rule.rule)


def record(metrics: Metrics, routes: Routes | None, request: Any, seconds: float) -> None:
    """Count an answered request (Site.log calls this for each)."""
    route = NO_ROUTE if routes is None else routes.of(request)
    metrics.http_request(method_label(request.method), route, request.code, seconds)


async def metrics_page(request: IRequest) -> bytes:
    """GET /metrics on the main port: the scrape, unless [metrics] listen
    serves it elsewhere (then 404 here), read off the reactor."""
    site = request.site  # type: ignore[attr-defined]
    scrape: Scrape | None = getattr(site, "scrape", None)
    if scrape is None:
        return answer_with_problem(request, NOT_FOUND, "nothing is served at this path")
    return await scrape.answer(request)


class Scrape:
    """The answer to a scrape: metrics.exposition() in a thread, since in
    multiprocess mode it reads every process's files."""

    def __init__(self, metrics: Metrics, offload: Offload) -> None:
        self._metrics = metrics
        self._offload = offload

    async def answer(self, request: IRequest) -> bytes:
        exposed = await self._offload(self._metrics.exposition)
        if exposed is None:
            return answer_with_problem(request, UNAVAILABLE, "metrics are not being recorded")
        content_type, body = exposed
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


class MetricsResource(Resource):
    """The whole site of [metrics] listen: /metrics, and 404 elsewhere."""

    isLeaf = True

    def __init__(self, scrape: Scrape) -> None:
        super().__init__()
        self._scrape = scrape

    def render(self, request: IRequest) -> Any:
        if request.path != b"/metrics" or request.method not in (b"GET", b"HEAD"):
            return answer_with_problem(request, NOT_FOUND, "only GET /metrics is served here")
        answering: Deferred[bytes] = Deferred.fromCoroutine(self._scrape.answer(request))
        answering.addCallbacks(lambda body: _finish(request, body), lambda failure: _failed(request, failure))
        return NOT_DONE_YET


def _finish(request: Any, body: bytes) -> None:
    if not request._disconnected:
        request.write(body)
        request.finish()


def _failed(request: Any, failure: Failure) -> None:
    log.failure("Could not answer a scrape", failure)
    if not request._disconnected:
        request.write(answer_with_problem(request, INTERNAL_ERROR, "the metrics could not be read"))
        request.finish()
