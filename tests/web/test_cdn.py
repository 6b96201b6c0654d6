"""The CDN in front: cache tags on every image answer, and the purges a
delete or a replacement sends, to a real HTTP server on a loopback port
standing for the CDN (waits between attempts on a Clock, never slept)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from pymager_tx.adapters.cdn.purger import HttpCachePurger, PurgeRequest
from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import ICachePurger, NoCachePurger, immediate
from pymager_tx.process.wiring import build_purger
from tests.images import jpeg
from tests.web.test_api import POLICY, Client, header

TOKEN = "cdn-api-token-0123456789"


class FakeCdn(Resource):
    """Answers each request with the next status of `answers` (200 once
    they run out), or holds it unanswered (None); hands each to `received`."""

    isLeaf = True

    def __init__(self, answers: list[int | None]) -> None:
        super().__init__()
        self.answers = answers
        self.received: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        self.received.put(
            {
                "method": request.method,
                "path": request.path,
                "headers": {
                    name.decode().lower(): values[0].decode()
                    for name, values in request.requestHeaders.getAllRawHeaders()
                },
                "body": request.content.read(),
            }
        )
        status = self.answers.pop(0) if self.answers else 200
        if status is None:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b"{}"


class _QuietSite(Site):
    """The CDN's own access log is not this service's log: kept out of it."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


@pytest.fixture
def cdn_answers() -> list[int | None]:
    return []


@pytest.fixture
def cdn(cdn_answers: list[int | None]) -> Iterator[tuple[FakeCdn, int]]:
    resource = FakeCdn(cdn_answers)
    site = _QuietSite(resource)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield resource, port.getHost().port
    for held in resource.held:
        if not held.finished and not held._disconnected:
            held.finish()
    pytest_twisted.blockon(port.stopListening())


def make_purger(port: int, clock: Clock, **options: Any) -> HttpCachePurger:
    request = PurgeRequest(
        f"http://127.0.0.1:{port}/service/abc/purge/{{id}}?password=hunter2",
        "POST",
        {"Fastly-Key": "{token}", "X-Purged": "{id}"},
        '{"tags": ["{id}"]}',
        TOKEN,
    )
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    return HttpCachePurger(request, http, clock, **{"attempts": 3, "backoff": 2.0, **options})


def logged(predicate: Callable[[LogEvent], bool]) -> Deferred[LogEvent]:
    """The next log event for which predicate holds."""
    found: Deferred[LogEvent] = Deferred()

    def observe(event: LogEvent) -> None:
        if not found.called and predicate(event):
            globalLogPublisher.removeObserver(observe)
            found.callback(event)

    globalLogPublisher.addObserver(observe)
    return found


def saying(words: str) -> Callable[[LogEvent], bool]:
    return lambda event: words in (event.get("log_format") or "")


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


class TestPurges:
    @pytest_twisted.ensureDeferred
    async def test_the_purge_names_the_image_in_its_path_headers_and_body(
        self, cdn: tuple[FakeCdn, int]
    ) -> None:
        server, port = cdn
        purger = make_purger(port, Clock())
        done = logged(saying("Purged"))
        purger.purge("photo-1")
        received = await server.received.get()
        assert received["method"] == b"POST"
        assert received["path"] == b"/service/abc/purge/photo-1"
        assert received["headers"]["fastly-key"] == TOKEN
        assert received["headers"]["x-purged"] == "photo-1"
        assert json.loads(received["body"]) == {"tags": ["photo-1"]}
        assert (await done)["image_id"] == "photo-1"
        assert purger.pending == 0
        await purger.stop()

    @pytest.mark.parametrize("cdn_answers", [[500, 503]])
    @pytest_twisted.ensureDeferred
    async def test_failed_attempts_are_tried_again_after_a_doubling_wait(
        self, cdn: tuple[FakeCdn, int], events: list[LogEvent]
    ) -> None:
        server, port = cdn
        clock = Clock()
        purger = make_purger(port, clock)
        failed = logged(saying("Could not purge"))
        purger.purge("photo")
        await server.received.get()
        assert (await failed)["reason"] == "status 500"
        assert [call.getTime() for call in clock.getDelayedCalls()] == [2.0]
        assert server.received.pending == []  # nothing is sent before the wait is over
        failed = logged(saying("Could not purge"))
        clock.advance(2.0)
        await server.received.get()
        assert (await failed)["reason"] == "status 503"
        assert [call.getTime() for call in clock.getDelayedCalls()] == [2.0 + 4.0]
        done = logged(saying("Purged"))
        clock.advance(4.0)
        await server.received.get()
        assert (await done)["attempt"] == 3
        assert clock.getDelayedCalls() == [] and purger.pending == 0
        # The token and the URL's password are never logged.
        text = " ".join(formatEvent(event) + repr(event) for event in events)
        assert TOKEN not in text and "hunter2" not in text
        await purger.stop()

    @pytest.mark.parametrize("cdn_answers", [[500, 500, 500]])
    @pytest_twisted.ensureDeferred
    async def test_a_purge_is_given_up_after_its_attempts(self, cdn: tuple[FakeCdn, int]) -> None:
        server, port = cdn
        clock = Clock()
        purger = make_purger(port, clock)
        gave_up = logged(saying("Gave up"))
        for wait in (0.0, 2.0, 4.0):
            failed = logged(saying("Could not purge"))
            if wait:
                clock.advance(wait)
            else:
                purger.purge("photo")
            await server.received.get()
            if wait < 4.0:
                await failed
        event = await gave_up
        assert (event["attempt"], event["host"]) == (3, "127.0.0.1")
        assert clock.getDelayedCalls() == [] and purger.pending == 0
        await purger.stop()

    @pytest.mark.parametrize("cdn_answers", [[None, None, None]])
    @pytest_twisted.ensureDeferred
    async def test_the_queue_is_bounded_and_a_queued_id_is_not_queued_twice(
        self, cdn: tuple[FakeCdn, int]
    ) -> None:
        server, port = cdn
        purger = make_purger(port, Clock(), max_queue=3, concurrency=1)
        dropped = logged(saying("Dropped"))
        for image_id in ("a", "b", "b", "c", "d"):
            purger.purge(image_id)
        assert purger.pending == 3  # a (sent, unanswered), b and c queued
        assert (await dropped)["image_id"] == "d"
        assert (await server.received.get())["path"].endswith(b"/a")
        await purger.stop()
        assert purger.pending == 0


def api_with(database: Database, purger: ICachePurger, tags: tuple[str, ...] = ("Surrogate-Key",)) -> Client:
    service = ImageService(database, MemoryBlobStore(), immediate, POLICY, purger=purger)
    return Client(ImageAPI(service, WriteTokens(()), immediate, HttpPolicy(cache_tag_headers=tags)))


@implementer(ICachePurger)
class RecordingPurger(NoCachePurger):
    def __init__(self) -> None:
        self.purged: list[str] = []

    def purge(self, image_id: str) -> None:
        self.purged.append(image_id)


class TestService:
    def test_a_delete_and_a_replacement_purge_the_image_and_nothing_else_does(
        self, database: Database
    ) -> None:
        purger = RecordingPurger()
        client = api_with(database, purger)
        old = jpeg((40, 30))
        client.put("/original/photo", old)
        client.request("GET", "/derived/photo-100x100.jpg")
        assert client.put("/original/photo", jpeg((50, 30)), **{"If-Match": '"' + "0" * 64 + '"'}).code == 412
        assert client.request("DELETE", "/original/nobody").code == 404
        assert purger.purged == []
        etag = header(client.request("GET", "/original/photo"), "ETag") or ""
        assert client.put("/original/photo", jpeg((50, 30)), **{"If-Match": etag}).code == 200
        assert purger.purged == ["photo"]
        assert client.request("DELETE", "/original/photo").code == 204
        assert purger.purged == ["photo", "photo"]

    @pytest.mark.parametrize("cdn_answers", [[None]])
    @pytest_twisted.ensureDeferred
    async def test_a_delete_answers_at_once_while_the_cdn_hangs(
        self, database: Database, cdn: tuple[FakeCdn, int]
    ) -> None:
        server, port = cdn
        purger = make_purger(port, Clock())
        client = api_with(database, purger)
        client.put("/original/photo", jpeg())
        assert client.request("DELETE", "/original/photo").code == 204
        assert (await server.received.get())["path"].endswith(b"/photo")
        assert purger.pending == 1  # still waiting for the CDN's answer
        await purger.stop()


class TestCacheTags:
    @pytest.mark.parametrize(
        ("tags", "expected"),
        [
            (("Surrogate-Key",), {"Surrogate-Key": "photo", "Cache-Tag": None}),
            (("Surrogate-Key", "Cache-Tag"), {"Surrogate-Key": "photo", "Cache-Tag": "photo"}),
            ((), {"Surrogate-Key": None, "Cache-Tag": None}),
        ],
    )
    def test_every_image_answer_names_its_id(
        self, database: Database, tags: tuple[str, ...], expected: dict[str, str | None]
    ) -> None:
        client = api_with(database, NoCachePurger(), tags)
        client.put("/original/photo", jpeg())
        answers = []
        for path in ("/original/photo", "/derived/photo-100x100.jpg"):
            full = client.request("GET", path)
            answers += [full, client.request("HEAD", path)]
            answers.append(client.request("GET", path, headers={"If-None-Match": header(full, "ETag") or ""}))
        assert [answer.code for answer in answers] == [200, 200, 304] * 2
        for answer in answers:
            for name, value in expected.items():
                assert header(answer, name) == value, (name, answer.code)
        # Not on refusals, nor on uploads.
        assert header(client.request("GET", "/original/nobody"), "Surrogate-Key") is None


class TestSettings:
    def test_without_a_purge_url_nothing_is_purged(self) -> None:
        assert isinstance(build_purger(load_settings(), reactor), NoCachePurger)

    def test_the_token_may_come_from_a_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "cdn-token"
        secret.write_text(TOKEN + "\n")
        settings = load_settings(
            None,
            {"cdn": {"purge_url": "https://api.fastly.com/purge/{id}", "purge_token_file": str(secret)}},
        )
        assert settings.cdn.token() == TOKEN
        purger = build_purger(settings, reactor)
        assert isinstance(purger, HttpCachePurger)
        assert TOKEN not in repr(settings.cdn.purge_token) and TOKEN not in str(vars(purger).get("_request"))

    @pytest.mark.parametrize(
        ("section", "named"),
        [
            ({"purge_url": "ftp://cdn/{id}"}, "cdn.purge_url"),
            ({"purge_url": "https://user:secret@cdn/{id}"}, "cdn.purge_url"),
            ({"cache_tag_headers": ["Bad Header"]}, "cdn.cache_tag_headers"),
            ({"purge_headers": {"Fastly-Key": "line\nbreak"}}, "cdn.purge_headers"),
            ({"purge_attempts": 0}, "cdn.purge_attempts"),
            ({"purge_queue": 0}, "cdn.purge_queue"),
        ],
    )
    def test_bad_settings_are_refused_by_name(self, section: dict[str, Any], named: str) -> None:
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            load_settings(None, {"cdn": section})
