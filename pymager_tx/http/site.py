"""
The HTTP site: bounded in memory, descriptors and time whatever clients do
(see pymager_tx.http.channel and pymager_tx.http.requests), and an access
log of structured events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pymager_tx.http.access_log import access_log, log_text
from pymager_tx.http.channel import ProblemChannel
from pymager_tx.http.connections import ConnectionLimit
from pymager_tx.http.guards import UploadGate, WriteTokens
from pymager_tx.http.metrics import Routes, Scrape, record
from pymager_tx.http.requests import BodyLimitedRequest
from pymager_tx.http.turns import TurnBudget
from pymager_tx.ports import NO_METRICS, Metrics


class PymagerSite(Site):
    """A Site that bounds request bodies, connections and the time requests
    take to arrive, and logs each request as a structured event."""

    # A plain HTTPChannel: HTTP/1.1 only, no HTTP/2 negotiation over TLS
    # (TLS belongs to the proxy in front).
    protocol = ProblemChannel  # type: ignore[assignment]
    requestFactory = BodyLimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource: IResource,
        max_upload_bytes: int,
        reactor: IReactorTime,
        idle_timeout: float = 60.0,
        trust_forwarded_for: bool = False,
        tokens: WriteTokens | None = None,
        access_log: bool = True,
        upload_directory: Path | None = None,
        max_uploads: int = 16,
        header_timeout: float = 10.0,
        body_timeout: float = 300.0,
        max_connections: int | None = None,
        metrics: Metrics = NO_METRICS,
        scrape: Scrape | None = None,
        routes: Routes | None = None,
    ) -> None:
        """upload_directory: where bodies are spooled (None: the system's
        temporary directory); max_connections: None for no limit; metrics:
        where each request is counted; scrape: what answers GET /metrics
        here (None: 404, when metrics are off or served elsewhere); routes:
        the templates requests are counted under (None: all "(none)")."""
        super().__init__(resource, reactor=reactor, timeout=idle_timeout)
        self.access_log = access_log
        self._parsePOSTFormSubmission = False
        self.gate = UploadGate(tokens or WriteTokens(()), max_upload_bytes, max_uploads)
        self.trust_forwarded_for = trust_forwarded_for
        self.upload_directory = upload_directory
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.connections = ConnectionLimit(max_connections)
        self.turns = TurnBudget(reactor)
        self.metrics = metrics
        self.scrape = scrape
        self.routes = routes

    def buildProtocol(self, addr: Any) -> Any:
        if not self.connections.admits():
            # Taken in the same accept batch as the one that reached the
            # limit: closed at once, so descriptors stay within it.
            return None
        return super().buildProtocol(addr)

    def log(self, request: Request) -> None:  # type: ignore[override]
        started = getattr(request, "started_at", None)
        seconds = 0.0 if started is None else self.reactor.seconds() - started
        if self.metrics is not NO_METRICS:
            record(self.metrics, self.routes, request, seconds)
        if not self.access_log:
            return
        client = request.getClientAddress()
        host = getattr(client, "host", "-")
        if self.trust_forwarded_for:
            forwarded = request.getHeader(b"x-forwarded-for")
            if forwarded:
                # The last entry is the one our proxy added; the ones before
                # it are whatever the client claimed.
                host = forwarded.split(b",")[-1].strip().decode("latin-1")
        access_log.info(
            '{client} "{method} {uri} {protocol}" {status} {length} "{referrer}" "{agent}" '
            "{duration_ms:.1f}ms",
            client=host,
            method=log_text(request.method),
            uri=log_text(request.uri),
            protocol=log_text(request.clientproto),
            status=request.code,
            length=request.sentLength or "-",
            referrer=log_text(request.getHeader(b"referer") or b"-"),
            agent=log_text(request.getHeader(b"user-agent") or b"-"),
            duration_ms=seconds * 1000,
        )
