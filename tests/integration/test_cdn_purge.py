"""The real service with [cdn] set, in front of a real HTTP server on a
loopback port standing for the CDN: cache tags on its answers, a purge
after a delete and a replacement, and a clean stop while the CDN hangs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.images import jpeg, png
from tests.integration.conftest import start, stop
from tests.web.test_cdn import FakeCdn, _QuietSite

TOKEN = "an-api-token-for-the-cdn"


@pytest.fixture
def cdn_answers() -> list[int | None]:
    return []


@pytest.fixture
def cdn(cdn_answers: list[int | None]) -> Iterator[tuple[FakeCdn, int]]:
    resource = FakeCdn(cdn_answers)
    port = reactor.listenTCP(0, _QuietSite(resource), interface="127.0.0.1")
    yield resource, port.getHost().port
    for held in resource.held:
        if not held.finished and not held._disconnected:
            held.finish()
    pytest_twisted.blockon(port.stopListening())


def cdn_section(port: int) -> dict[str, object]:
    return {
        "cache_tag_headers": ["Surrogate-Key", "Cache-Tag"],
        "purge_url": f"http://127.0.0.1:{port}/purge/{{id}}",
        "purge_method": "PURGE",
        "purge_headers": {"Fastly-Key": "{token}"},
        "purge_token": TOKEN,
    }


@pytest_twisted.ensureDeferred
async def test_deletes_and_replacements_purge_the_image(
    data_directory: Path, cdn: tuple[FakeCdn, int]
) -> None:
    server, port = cdn
    running = await start(data_directory, cdn=cdn_section(port))
    try:
        client = running.client()
        await client.upload("photo", jpeg())
        derived = await running.request("HEAD", "/derived/photo-100x100.jpg")
        assert derived.headers.getRawHeaders("Surrogate-Key") == ["photo"]
        assert derived.headers.getRawHeaders("Cache-Tag") == ["photo"]
        original = await client.get_original("photo")
        await client.replace("photo", png(), original.etag or "")
        purge = await server.received.get()
        assert (purge["method"], purge["path"]) == (b"PURGE", b"/purge/photo")
        assert purge["headers"]["fastly-key"] == TOKEN
        await client.delete("photo")
        assert (await server.received.get())["path"] == b"/purge/photo"
    finally:
        await stop(running)


@pytest.mark.parametrize("cdn_answers", [[None]])
@pytest_twisted.ensureDeferred
async def test_a_hanging_cdn_neither_delays_a_delete_nor_the_stop(
    data_directory: Path, cdn: tuple[FakeCdn, int]
) -> None:
    server, port = cdn
    # Only the stop ends the unanswered purge: no attempt times out first.
    running = await start(data_directory, cdn={**cdn_section(port), "purge_timeout_seconds": 600.0})
    stopped = False
    try:
        client = running.client()
        await client.upload("photo", jpeg())
        await client.delete("photo")  # answered while the purge is unanswered
        await server.received.get()
        assert running.service.purger.pending == 1
        await stop(running)
        stopped = True
        assert running.service.purger.pending == 0
    finally:
        if not stopped:
            await stop(running)
