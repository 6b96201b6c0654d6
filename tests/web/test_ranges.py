"""Range requests over HTTP on originals and derived images: 206 with one
byte range, 416 past the end, If-Range, and large originals streamed from
storage a part at a time, from the range's first byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from pymager_tx.adapters.sql.database import Database
from pymager_tx.http.site import PymagerSite
from pymager_tx.http.streaming import PART_BYTES
from tests.images import jpeg
from tests.web.test_api import Client, content_length, header, make_api
from tests.web.test_streaming import BIG, CountingStore, FillingTransport, api_with_big

PICTURE = jpeg((300, 200))


@pytest.fixture
def client(database: Database) -> Client:
    client = Client(make_api(database))
    assert client.put("/original/photo", PICTURE).code == 201
    return client


def ranged(client: Client, value: str, path: str = "/original/photo", **headers: str) -> Any:
    return client.request("GET", path, headers={"Range": value, **headers})


def assert_partial(response: Any, first: int, last: int, whole: bytes) -> None:
    assert response.code == 206, response.body
    assert header(response, "Content-Range") == f"bytes {first}-{last}/{len(whole)}"
    assert content_length(response) == str(last - first + 1)
    assert response.body == whole[first : last + 1]
    assert header(response, "Accept-Ranges") == "bytes"
    assert header(response, "ETag") is not None


def test_one_byte_range_in_each_form(client: Client) -> None:
    size = len(PICTURE)
    assert_partial(ranged(client, "bytes=0-9"), 0, 9, PICTURE)
    assert_partial(ranged(client, "bytes=100-"), 100, size - 1, PICTURE)
    assert_partial(ranged(client, "bytes=-10"), size - 10, size - 1, PICTURE)
    # Past the end: what there is.
    assert_partial(ranged(client, f"bytes=10-{size * 2}"), 10, size - 1, PICTURE)
    assert_partial(ranged(client, f"bytes=-{size * 2}"), 0, size - 1, PICTURE)
    assert_partial(ranged(client, f"bytes={size - 1}-{size - 1}"), size - 1, size - 1, PICTURE)
    # Spaces and case as RFC 9110 lets clients write them.
    assert_partial(ranged(client, "Bytes = 5-6 ,"), 5, 6, PICTURE)


def test_a_range_past_the_end_is_416_with_the_length(client: Client) -> None:
    size = len(PICTURE)
    for value in (f"bytes={size}-", f"bytes={size}-{size + 5}", "bytes=-0", "bytes=" + "9" * 30 + "-"):
        response = ranged(client, value)
        assert response.code == 416, value
        assert header(response, "Content-Range") == f"bytes */{size}"
        assert header(response, "Content-Type") == "application/problem+json"
        assert json.loads(response.body)["type"] == "/problems/range-not-satisfiable"


def test_ranges_not_taken_answer_the_whole_image(client: Client) -> None:
    for value in (
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes=5-3",
        "bytes=abc",
        "bytes=",
        "0-10",
        "bytes=" + "9" * 31 + "-",
    ):
        response = ranged(client, value)
        assert response.code == 200, value
        assert response.body == PICTURE
        assert header(response, "Content-Range") is None
        assert header(response, "Accept-Ranges") == "bytes"


def test_if_range_applies_the_range_only_to_the_image_it_names(client: Client) -> None:
    whole = client.request("GET", "/original/photo")
    etag, modified = header(whole, "ETag") or "", header(whole, "Last-Modified") or ""
    assert_partial(ranged(client, "bytes=0-3", **{"If-Range": etag}), 0, 3, PICTURE)
    assert_partial(ranged(client, "bytes=0-3", **{"If-Range": modified}), 0, 3, PICTURE)
    stale = ['"' + "0" * 64 + '"', "W/" + etag, "Mon, 01 Jan 2001 00:00:00 GMT", "not a validator"]
    for value in stale:
        response = ranged(client, "bytes=0-3", **{"If-Range": value})
        assert response.code == 200, value
        assert response.body == PICTURE


def test_conditions_and_head_come_before_ranges(client: Client) -> None:
    etag = header(client.request("HEAD", "/original/photo"), "ETag") or ""
    assert ranged(client, "bytes=0-3", **{"If-None-Match": etag}).code == 304
    head = client.request("HEAD", "/original/photo", headers={"Range": "bytes=0-3"})
    assert head.code == 200
    assert content_length(head) == str(len(PICTURE))
    assert header(head, "Accept-Ranges") == "bytes"
    assert header(head, "Content-Range") is None


def test_ranges_of_derived_images_negotiated_or_not(client: Client) -> None:
    whole = client.request("GET", "/derived/photo-100x100.png").body
    assert_partial(ranged(client, "bytes=0-7", "/derived/photo-100x100.png"), 0, 7, whole)
    assert whole[:8] == b"\x89PNG\r\n\x1a\n"
    webp = client.request("GET", "/derived/photo-100x100.webp").body
    negotiated = ranged(client, "bytes=-4", "/derived/photo-100x100.auto", Accept="image/webp")
    assert_partial(negotiated, len(webp) - 4, len(webp) - 1, webp)
    assert "Accept" in (header(negotiated, "Vary") or "")
    past = ranged(client, f"bytes={len(whole)}-", "/derived/photo-100x100.png")
    assert past.code == 416
    assert header(past, "Content-Range") == f"bytes */{len(whole)}"


def test_a_range_of_a_large_original_reads_that_range_alone(database: Database) -> None:
    blobs = CountingStore()
    client = Client(api_with_big(database, blobs))
    first, last = 300_000, 700_000
    response = ranged(client, f"bytes={first}-{last}", "/original/big")
    assert_partial(response, first, last, BIG)
    assert blobs.skipped == first
    assert blobs.parts_read == -(-(last - first + 1) // PART_BYTES)
    assert blobs.closed == 1
    tail = ranged(client, "bytes=-1000", "/original/big")
    assert_partial(tail, len(BIG) - 1000, len(BIG) - 1, BIG)


def test_a_slow_client_of_a_range_holds_one_part(database: Database) -> None:
    blobs = CountingStore()
    api = api_with_big(database, blobs)
    site = PymagerSite(api.resource(), max_upload_bytes=4_000_000, reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = FillingTransport(room=64 * 1024)
    channel.makeConnection(transport)
    channel.dataReceived(
        b"GET /original/big HTTP/1.1\r\nHost: images.example.com\r\nRange: bytes=100000-\r\n\r\n"
    )
    assert blobs.parts_read == 1, "paused after one part"
    while transport.full:
        transport.drain()
    head, body = (transport.received + transport.value()).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 206 ")
    assert b"Content-Range: bytes 100000-%d/%d" % (len(BIG) - 1, len(BIG)) in head
    assert body == BIG[100_000:]
    assert blobs.closed == 1
