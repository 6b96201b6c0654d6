"""Out of memory over HTTP: 503 with Retry-After, at upload and at
derivation, and never remembered as the image's fault."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from twisted.logger import LogEvent

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import immediate
from tests.exhausting import Memory, exhausting_decoder
from tests.images import opened, png
from tests.web.test_api import POLICY, Client, assert_problem, header


@pytest.fixture
def memory() -> Memory:
    return Memory()


@pytest.fixture
def client(database: Database, memory: Memory) -> Iterator[Client]:
    with exhausting_decoder(memory) as decoder:
        policy = replace(POLICY, limits=replace(POLICY.limits, decoders=(decoder,)))
        service = ImageService(database, MemoryBlobStore(), immediate, policy)
        yield Client(ImageAPI(service, WriteTokens(()), immediate, HttpPolicy()))


def assert_out_of_memory(response: object) -> None:
    problem = assert_problem(response, 503, "try again later")
    assert problem["type"] == "/problems/out-of-memory"
    assert header(response, "Retry-After") == "5"
    assert "MemoryError" not in problem["detail"]


def test_an_upload_that_runs_out_of_memory_is_503_and_can_be_sent_again(
    client: Client, memory: Memory, log_events: list[LogEvent]
) -> None:
    memory.exhausted = True
    assert_out_of_memory(client.put("/original/photo", png()))
    assert client.request("GET", "/original/photo").code == 404  # nothing was kept

    memory.exhausted = False
    assert client.put("/original/photo", png()).code == 201
    assert any(event.get("reason") == "MemoryError while decoding an image" for event in log_events)


def test_a_derivation_that_runs_out_of_memory_is_503_and_not_remembered(
    client: Client, memory: Memory
) -> None:
    assert client.put("/original/photo", png((120, 90))).code == 201
    memory.exhausted = True

    assert_out_of_memory(client.request("GET", "/derived/photo-100x100.png"))
    # Asked again, the image is decoded again: no refusal was remembered.
    assert_out_of_memory(client.request("GET", "/derived/photo-100x100.png"))
    assert memory.failed_loads == 2

    memory.exhausted = False
    response = client.request("GET", "/derived/photo-100x100.png")
    assert response.code == 200
    assert opened(response.body).size == (100, 100)
