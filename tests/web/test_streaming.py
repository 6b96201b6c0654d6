"""Large images are sent from storage a part at a time, as the client takes
them: a client that does not read holds one part, not the image."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from PIL import Image
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.http.site import PymagerSite
from pymager_tx.http.streaming import PART_BYTES
from pymager_tx.ports import IBlobReader, immediate
from tests.images import encode
from tests.web.test_api import POLICY, Client, content_length

# Random pixels compress to nothing: a PNG of about 1.2 MB.
BIG = encode(Image.frombytes("RGB", (640, 640), os.urandom(640 * 640 * 3)), "PNG")


class CountingStore(MemoryBlobStore):
    """Counts the parts read of every blob opened, and the blobs closed."""

    def __init__(self) -> None:
        super().__init__()
        self.parts_read = 0
        self.closed = 0
        self.skipped = 0

    def open(self, key: str) -> Deferred[IBlobReader]:
        return super().open(key).addCallback(lambda reader: _Counted(reader, self))


@implementer(IBlobReader)
class _Counted:
    def __init__(self, reader: IBlobReader, store: CountingStore) -> None:
        self.size = reader.size
        self._reader = reader
        self._store = store

    def read(self, size: int) -> Deferred[bytes]:
        self._store.parts_read += 1
        return self._reader.read(size)

    def skip(self, count: int) -> Deferred[None]:
        self._store.skipped += count
        return self._reader.skip(count)

    def close(self) -> Deferred[None]:
        self._store.closed += 1
        return self._reader.close()


class FillingTransport(StringTransport):
    """A transport whose send buffer fills: past `room` unsent bytes it
    pauses its producer, as a socket whose peer does not read makes
    Twisted's transports do, and resumes it once drained."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.received = b""
        self.full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.full and len(self.value()) > self.room:
            self.full = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.received += self.value()
        self.clear()
        self.full = False
        self.producer.resumeProducing()


def api_with_big(database: Database, blobs: CountingStore) -> ImageAPI:
    policy = replace(POLICY, max_upload_bytes=4_000_000)
    api = ImageAPI(ImageService(database, blobs, immediate, policy), WriteTokens(()), immediate, HttpPolicy())
    assert Client(api).put("/original/big", BIG).code == 201
    return api


def serving(database: Database) -> tuple[CountingStore, Any]:
    blobs = CountingStore()
    api = api_with_big(database, blobs)
    site = PymagerSite(api.resource(), max_upload_bytes=4_000_000, reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    return blobs, channel


def test_a_client_that_does_not_read_holds_one_part_of_a_large_original(database: Database) -> None:
    blobs, channel = serving(database)
    transport = FillingTransport(room=64 * 1024)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /original/big HTTP/1.1\r\nHost: images.example.com\r\n\r\n")
    assert blobs.parts_read == 1, "paused after one part"
    assert len(transport.value()) < 64 * 1024 + PART_BYTES + 1024
    while transport.full:
        transport.drain()
    _head, body = (transport.received + transport.value()).split(b"\r\n\r\n", 1)
    assert body == BIG
    assert blobs.parts_read == -(-len(BIG) // PART_BYTES) + 1  # and one read that finds the end
    assert blobs.closed == 1


def test_a_client_leaving_mid_answer_closes_the_blob_and_is_no_failure(
    database: Database, log_events: list[LogEvent]
) -> None:
    blobs, channel = serving(database)
    transport = FillingTransport(room=64 * 1024)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /original/big HTTP/1.1\r\nHost: images.example.com\r\n\r\n")
    assert blobs.closed == 0
    # The transport stops its producer, then tells the channel, as a socket
    # closed by its peer does.
    channel.stopProducing()
    channel.connectionLost(Failure(ConnectionDone("the client left")))
    assert blobs.closed == 1
    assert blobs.parts_read == 1
    alarms = [event for event in log_events if event.get("log_level") in (LogLevel.critical, LogLevel.error)]
    assert alarms == []


def test_large_originals_arrive_whole_through_http(database: Database) -> None:
    blobs = CountingStore()
    client = Client(api_with_big(database, blobs))
    response = client.request("GET", "/original/big")
    assert response.code == 200
    assert response.body == BIG
    assert blobs.parts_read > 1 and blobs.closed == 1
    assert content_length(client.request("HEAD", "/original/big")) == str(len(BIG))
