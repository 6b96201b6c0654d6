"""
Crash safety and faults, for real: a database that goes away and comes back,
a storage that fails, a disk that fills up.  Every failure is a prompt 503
with Retry-After and a problem document that names no host, port or driver;
the process stays up, and serves again once the fault is gone, without a
restart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import make_url
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent

from pymager_tx.adapters.sql.originals_txn import find_original_txn, status_of_txn
from pymager_tx.client import NotFound, PymagerClient, ServiceUnavailable, StorageFull
from tests.faults import (
    CuttableProxy,
    files_under,
    fill,
    make_read_only,
    make_writable,
    noise_png,
    small_tmpfs,
    unmount,
)
from tests.images import jpeg, opened
from tests.integration.conftest import Running, _drop_schema, start, stop

# Words a 503 must not leak: where the database is, and what talks to it.
_LEAKS = ("127.0.0.1", "localhost", "5432", "psycopg", "postgres", "sqlite", "refused", "errno", "/")


async def refused_503(work: Deferred[Any], retry_after: int) -> ServiceUnavailable:
    """The 503 a client call must end with, and its Retry-After."""
    try:
        await work
    except ServiceUnavailable as refusal:
        return checked_503(refusal, retry_after)
    raise AssertionError("503 expected")


def checked_503(refusal: ServiceUnavailable, retry_after: int) -> ServiceUnavailable:
    assert refusal.status == 503
    assert refusal.headers.getRawHeaders("Retry-After") == [str(retry_after)]
    assert refusal.retry_after == retry_after
    return refusal


async def unavailable(work: Deferred[Any], problem_type: str, retry_after: int, *leaks: str) -> None:
    """Check a 503 answer: its problem type, Retry-After, and a body that
    tells the client what to do and nothing about the infrastructure."""
    no_leaks(await refused_503(work, retry_after), problem_type, *leaks)


def no_leaks(refusal: ServiceUnavailable, problem_type: str, *leaks: str) -> None:
    document = refusal.document
    assert document.type == f"/problems/{problem_type}"
    # The type itself is "/problems/...": look for leaks in the words only.
    words = f"{document.title} {document.detail}".lower()
    for leak in (*_LEAKS, *leaks):
        assert leak.lower() not in words, (leak, words)


class Counting:
    """An HTTP client that counts the requests a PymagerClient sends."""

    def __init__(self, http: HTTPClient) -> None:
        self._http = http
        self.sent = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return self._http.request(*args, **kwargs)


def blob_path(server: Running, key: str) -> Path:
    return server.service.data_directory / "files" / key


async def blob_of(server: Running, image_id: str) -> Path:
    record = await server.service.database.read(find_original_txn, image_id)
    assert record is not None
    return blob_path(server, record.blob_key)


async def serves_again(server: Running, image_id: str, data: bytes) -> None:
    """The service is up and whole: health, reads, derivations, writes."""
    client = server.client()
    assert (await client.health())["status"] == "ok"
    assert (await client.get_original(image_id)).data == data
    await client.get_derived(image_id, 100, 100, "jpg")
    await server.service.images.derivations_settled()  # stored, not only sent
    fresh = f"{image_id}-after"
    await client.upload(fresh, jpeg((50, 40)))
    await client.delete(fresh)


# Database unreachable


@pytest_twisted.async_yield_fixture
async def proxy(postgres_server_url: str) -> AsyncIterator[CuttableProxy]:
    """A cuttable forwarder to the test session's PostgreSQL server."""
    direct = make_url(postgres_server_url)
    forwarder = CuttableProxy(direct.host or "127.0.0.1", direct.port or 5432)
    forwarder.listen()
    yield forwarder
    await forwarder.close()


def through(proxy: CuttableProxy, postgres_server_url: str) -> str:
    """The test database's URL, by way of the proxy."""
    direct = make_url(postgres_server_url)
    return direct.set(host="127.0.0.1", port=proxy.listening_port).render_as_string(hide_password=False)


@pytest_twisted.ensureDeferred
async def test_database_unreachable_then_back(
    tmp_path: Path, postgres_server_url: str, proxy: CuttableProxy
) -> None:
    # Every request asks the database: a rendition held in memory is still
    # not served while the database cannot say whether it was deleted.
    server = await start(
        tmp_path / "data",
        database_url=through(proxy, postgres_server_url),
        memory_cache={"poll_seconds": 0},
    )
    client = server.client()
    try:
        data = jpeg((160, 120))
        await client.upload("photo", data)
        await client.get_derived("photo", 40, 30, "jpg")
        assert proxy.open, "the service holds connections through the proxy"

        await proxy.cut()
        port = str(proxy.listening_port)
        for _round in range(2):  # a failure does not turn into a hang the second time
            for call in (
                lambda: client.get_original("photo"),
                lambda: client.get_derived("photo", 40, 30, "jpg"),
                lambda: client.get_derived("photo", 100, 100, "jpg"),
                lambda: client.delete("photo"),
                lambda: client.upload("other", jpeg((80, 60))),
                lambda: client.health(),
            ):
                await unavailable(call(), "database-unavailable", 5, port)
            # HEAD: the status and Retry-After, and no body.
            head = await refused_503(client.head_original("photo"), 5)
            assert head.document.type == "about:blank"

        # A client that retries rides the outage out: asked while the
        # database is away, it is answered once it is back (Retry-After
        # capped at 0.2 s here), and nobody restarts anything.
        counting = Counting(HTTPClient(Agent(reactor, pool=server.pool)))
        patient = PymagerClient(server.url, http_client=counting, retries=20, max_delay=0.2)  # type: ignore[arg-type]
        back = reactor.callLater(0.5, proxy.listen)
        assert (await patient.get_original("photo")).data == data
        assert not back.active() and counting.sent >= 2
        assert (await client.health())["status"] == "ok"
        # Nothing the failed requests started was half done.
        assert await server.service.database.read(status_of_txn, "other") is None
        await client.upload("other", jpeg((80, 60)))
        await serves_again(server, "photo", data)
    finally:
        await stop(server)
        await _drop_schema(postgres_server_url)


@pytest_twisted.ensureDeferred
async def test_database_cut_and_restored_twice(
    tmp_path: Path, postgres_server_url: str, proxy: CuttableProxy
) -> None:
    """Cut and restored twice in a row: each outage is seen, each recovery too."""
    server = await start(tmp_path / "data", database_url=through(proxy, postgres_server_url))
    client = server.client()
    try:
        data = jpeg((64, 48))
        await client.upload("photo", data)
        for _outage in range(2):
            await proxy.cut()
            await unavailable(client.get_original("photo"), "database-unavailable", 5)
            proxy.listen()
            assert (await client.get_original("photo")).data == data
    finally:
        await stop(server)
        await _drop_schema(postgres_server_url)


# Storage failing


@pytest_twisted.ensureDeferred
async def test_storage_read_only_then_repaired(tmp_path: Path, database_url: str) -> None:
    """The files' filesystem turns read-only (as ext4 does after an I/O
    error): writes answer 503 and leave nothing behind; reads go on, and a
    new rendition is still sent, though it cannot be kept."""
    server = await start(tmp_path / "data", database_url=database_url)
    files = server.service.data_directory / "files"
    mounted = False
    client = server.client()
    try:
        data = jpeg((160, 120))
        await client.upload("photo", data)
        await client.get_derived("photo", 40, 30, "jpg")

        mounted = True
        make_read_only(files)
        before = files_under(files)
        await unavailable(client.upload("other", jpeg((80, 60))), "storage-unavailable", 5)
        # Sent as soon as rendered; storing it fails after, logged, leaving nothing.
        assert opened((await client.get_derived("photo", 100, 100, "jpg")).data).size == (100, 100)
        await server.service.images.derivations_settled()
        # Reads still work where nothing needs writing; the process is up.
        assert (await client.get_original("photo")).data == data
        await client.get_derived("photo", 40, 30, "jpg")
        await client.health()
        # A deletion fails half-way: the original is marked deleted, its
        # files stay until a retry can remove them.
        await unavailable(client.delete("photo"), "storage-unavailable", 5)
        assert files_under(files) == before
        assert await server.service.database.read(status_of_txn, "other") is None

        make_writable(files)
        mounted = False
        # The interrupted deletion is finished by the client's retry.
        await client.delete("photo")
        with pytest.raises(NotFound):
            await client.get_original("photo")
        await client.upload("photo", data)
        await client.upload("other", jpeg((80, 60)))
        await serves_again(server, "photo", data)
        assert files_under(files / ".tmp") == []
    finally:
        if mounted:
            unmount(files)
        await stop(server)
        if database_url.startswith("postgresql"):
            await _drop_schema(database_url)


@pytest_twisted.ensureDeferred
async def test_stored_file_unreadable_then_repaired(tmp_path: Path, database_url: str) -> None:
    """A stored original that cannot be read (a directory where its file
    should be): 503 for the original and for new derived images of it that
    need its bytes.  A size whose decode the upload's check kept needs none:
    it is derived from those pixels, as from the file."""
    server = await start(tmp_path / "data", database_url=database_url)
    client = server.client()
    try:
        data = jpeg((160, 120))
        await client.upload("photo", data)
        blob = await blob_of(server, "photo")
        aside = blob.with_name(blob.name + ".aside")
        blob.rename(aside)
        blob.mkdir()

        await unavailable(client.get_original("photo"), "storage-unavailable", 5)
        # 40x30 decodes it at 1/2; the check kept it whole, for 100x100.
        await unavailable(client.get_derived("photo", 40, 30, "jpg"), "storage-unavailable", 5)
        kept = await client.get_derived("photo", 100, 100, "jpg")
        assert opened(kept.data).size == (100, 100)
        # HEAD answers as GET does, without reading the file.
        await refused_503(client.head_original("photo"), 5)
        await client.health()

        blob.rmdir()
        aside.rename(blob)
        await serves_again(server, "photo", data)
    finally:
        await stop(server)
        if database_url.startswith("postgresql"):
            await _drop_schema(database_url)


# Disk full


@pytest_twisted.ensureDeferred
async def test_disk_full(tmp_path: Path, database_url: str) -> None:
    data_directory = tmp_path / "data"
    files = data_directory / "files"
    with small_tmpfs(files, "4m"):
        server = await start(data_directory, database_url=database_url)
        try:
            await _fill_up_and_recover(server, files)
        finally:
            await stop(server)
            if database_url.startswith("postgresql"):
                await _drop_schema(database_url)


async def _fill_up_and_recover(server: Running, files: Path) -> None:
    # About 1 MB each, incompressible: the fifth at the latest finds no room.
    client = server.client()
    stored: dict[str, bytes] = {}
    failed_id = ""
    for number in range(10):
        image_id = f"noise{number}"
        data = noise_png((600, 560), seed=number)
        try:
            await client.upload(image_id, data)
        except StorageFull as refusal:
            no_leaks(checked_503(refusal, 60), "storage-full")
            failed_id = image_id
            break
        stored[image_id] = data
    assert failed_id, "the 4 MB disk never filled up"
    assert len(stored) >= 2

    # Failed cleanly: no temporary file, no row, no file of it.
    assert files_under(files / ".tmp") == []
    assert await server.service.database.read(status_of_txn, failed_id) is None
    with pytest.raises(NotFound):
        await client.get_original(failed_id)
    originals = files_under(files / "originals")
    assert len(originals) == len(stored)
    for image_id, data in stored.items():
        assert (await client.get_original(image_id)).data == data

    # A derived image with no room to store it: still sent, since it is
    # sent as soon as it is rendered, and nothing is left of the failed store.
    filler = fill(files)
    first = next(iter(stored))
    for _ in range(2):
        assert opened((await client.get_derived(first, 800, 600, "png")).data).width == 800
        await server.service.images.derivations_settled()
    assert files_under(files / ".tmp") == []
    assert files_under(files / "derived") == []
    # An upload meanwhile fails the same way.
    await unavailable(client.upload(failed_id, noise_png((600, 560), seed=99)), "storage-full", 60)
    assert files_under(files / ".tmp") == []
    await client.health()
    filler.unlink()

    # Room made through the API: the same ID is free, and everything works.
    victim = next(reversed(stored))
    await client.delete(victim)
    del stored[victim]
    retried = noise_png((600, 560), seed=99)
    await client.upload(failed_id, retried)
    stored[failed_id] = retried
    for image_id, data in stored.items():
        assert (await client.get_original(image_id)).data == data
    await client.get_derived(first, 100, 100, "jpg")
    await server.service.images.derivations_settled()  # stored, not only sent
    await client.health()
    assert files_under(files / ".tmp") == []
    assert os.path.ismount(files)


@pytest_twisted.ensureDeferred
async def test_database_lost_in_the_middle_of_an_upload(
    tmp_path: Path, postgres_server_url: str, proxy: CuttableProxy
) -> None:
    server = await start(tmp_path / "data", database_url=through(proxy, postgres_server_url))
    blobs = server.service.blobs
    store = blobs.put

    async def store_then_cut(key: str, data: bytes) -> None:
        await store(key, data)
        await proxy.cut()

    try:
        # The file is stored, then the database goes: the upload cannot be
        # marked ready, nor its claim withdrawn.
        blobs.put = lambda key, data: Deferred.fromCoroutine(store_then_cut(key, data))  # type: ignore[method-assign]
        data = jpeg((64, 48))
        client = server.client()
        await unavailable(client.upload("photo", data), "database-unavailable", 5)
        blobs.put = store  # type: ignore[method-assign]
        assert files_under(server.service.data_directory / "files" / "originals") == []
        assert files_under(server.service.data_directory / "files" / ".tmp") == []

        proxy.listen()
        with pytest.raises(NotFound):
            await client.get_original("photo")
        # The client retries its upload once the database is back.
        await client.upload("photo", data)
        assert (await client.get_original("photo")).data == data
    finally:
        await stop(server)
        await _drop_schema(postgres_server_url)
