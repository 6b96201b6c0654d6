"""
Crash safety and faults, for real: a database that goes away and comes back,
a storage that fails, a disk that fills up.  Every failure is a prompt 503
with Retry-After and a problem document that names no host, port or driver;
the process stays up, and serves again once the fault is gone, without a
restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from sqlalchemy import make_url
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.originals_txn import find_original_txn, status_of_txn
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
from tests.images import jpeg
from tests.integration.conftest import Running, _drop_schema, start, stop

# Words a 503 must not leak: where the database is, and what talks to it.
_LEAKS = ("127.0.0.1", "localhost", "5432", "psycopg", "postgres", "sqlite", "refused", "errno", "/")


def header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else values[0]


async def unavailable(response: Any, problem_type: str, retry_after: int, *leaks: str) -> dict[str, Any]:
    """Check a 503 answer: its problem type, Retry-After, and a body that
    tells the client what to do and nothing about the infrastructure."""
    body = await treq.content(response)
    assert response.code == 503, body
    assert header(response, "Content-Type") == "application/problem+json"
    assert header(response, "Retry-After") == str(retry_after)
    document: dict[str, Any] = json.loads(body)
    assert document["type"] == f"/problems/{problem_type}"
    assert document["status"] == 503
    text = body.decode("utf-8").lower()
    # The type itself is "/problems/...": look for leaks in the words only.
    words = f"{document['title']} {document['detail']}".lower()
    for leak in (*_LEAKS, *leaks):
        assert leak.lower() not in words, (leak, text)
    return document


async def content(response: Any, status: int) -> bytes:
    body: bytes = await treq.content(response)
    assert response.code == status, body
    return body


async def put(server: Running, image_id: str, data: bytes) -> Any:
    response = await server.request("PUT", f"/original/{image_id}", data=data)
    await treq.content(response)
    return response


def blob_path(server: Running, key: str) -> Path:
    return server.service.data_directory / "files" / key


async def blob_of(server: Running, image_id: str) -> Path:
    record = await server.service.database.read(find_original_txn, image_id)
    assert record is not None
    return blob_path(server, record.blob_key)


async def serves_again(server: Running, image_id: str, data: bytes) -> None:
    """The service is up and whole: health, reads, derivations, writes."""
    await content(await server.request("GET", "/healthz"), 200)
    assert await content(await server.request("GET", f"/original/{image_id}"), 200) == data
    await content(await server.request("GET", f"/derived/{image_id}-100x100.jpg"), 200)
    fresh = f"{image_id}-after"
    assert (await put(server, fresh, jpeg((50, 40)))).code == 201
    await content(await server.request("DELETE", f"/original/{fresh}"), 204)


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
    try:
        data = jpeg((160, 120))
        assert (await put(server, "photo", data)).code == 201
        await content(await server.request("GET", "/derived/photo-40x30.jpg"), 200)
        assert proxy.open, "the service holds connections through the proxy"

        await proxy.cut()
        port = str(proxy.listening_port)
        for _round in range(2):  # a failure does not turn into a hang the second time
            for method, path in [
                ("GET", "/original/photo"),
                ("HEAD", "/original/photo"),
                ("GET", "/derived/photo-40x30.jpg"),
                ("GET", "/derived/photo-100x100.jpg"),
                ("DELETE", "/original/photo"),
            ]:
                response = await server.request(method, path)
                if method == "HEAD":
                    assert response.code == 503
                    assert header(response, "Retry-After") == "5"
                    await treq.content(response)
                else:
                    await unavailable(response, "database-unavailable", 5, port)
            await unavailable(
                await server.request("PUT", "/original/other", data=jpeg((80, 60))),
                "database-unavailable",
                5,
                port,
            )
            await unavailable(await server.request("GET", "/healthz"), "database-unavailable", 5, port)

        proxy.listen()
        # The first request after the database is back succeeds: the pool
        # replaces connections the cut broke, nobody restarts anything.
        await content(await server.request("GET", "/healthz"), 200)
        assert await content(await server.request("GET", "/original/photo"), 200) == data
        # Nothing the failed requests started was half done.
        assert await server.service.database.read(status_of_txn, "other") is None
        assert (await put(server, "other", jpeg((80, 60)))).code == 201
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
    try:
        data = jpeg((64, 48))
        assert (await put(server, "photo", data)).code == 201
        for _outage in range(2):
            await proxy.cut()
            await unavailable(await server.request("GET", "/original/photo"), "database-unavailable", 5)
            proxy.listen()
            assert await content(await server.request("GET", "/original/photo"), 200) == data
    finally:
        await stop(server)
        await _drop_schema(postgres_server_url)


# Storage failing


@pytest_twisted.ensureDeferred
async def test_storage_read_only_then_repaired(tmp_path: Path, database_url: str) -> None:
    """The files' filesystem turns read-only (as ext4 does after an I/O
    error): writes answer 503 and leave nothing behind; reads go on."""
    server = await start(tmp_path / "data", database_url=database_url)
    files = server.service.data_directory / "files"
    mounted = False
    try:
        data = jpeg((160, 120))
        assert (await put(server, "photo", data)).code == 201
        await content(await server.request("GET", "/derived/photo-40x30.jpg"), 200)

        mounted = True
        make_read_only(files)
        before = files_under(files)
        await unavailable(
            await server.request("PUT", "/original/other", data=jpeg((80, 60))), "storage-unavailable", 5
        )
        await unavailable(await server.request("GET", "/derived/photo-100x100.jpg"), "storage-unavailable", 5)
        # Reads still work where nothing needs writing; the process is up.
        assert await content(await server.request("GET", "/original/photo"), 200) == data
        await content(await server.request("GET", "/derived/photo-40x30.jpg"), 200)
        await content(await server.request("GET", "/healthz"), 200)
        # A deletion fails half-way: the original is marked deleted, its
        # files stay until a retry can remove them.
        await unavailable(await server.request("DELETE", "/original/photo"), "storage-unavailable", 5)
        assert files_under(files) == before
        assert await server.service.database.read(status_of_txn, "other") is None

        make_writable(files)
        mounted = False
        # The interrupted deletion is finished by the client's retry.
        await content(await server.request("DELETE", "/original/photo"), 204)
        await content(await server.request("GET", "/original/photo"), 404)
        assert (await put(server, "photo", data)).code == 201
        assert (await put(server, "other", jpeg((80, 60)))).code == 201
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
    should be): 503 for the original and for new derived images of it."""
    server = await start(tmp_path / "data", database_url=database_url)
    try:
        data = jpeg((160, 120))
        assert (await put(server, "photo", data)).code == 201
        blob = await blob_of(server, "photo")
        aside = blob.with_name(blob.name + ".aside")
        blob.rename(aside)
        blob.mkdir()

        await unavailable(await server.request("GET", "/original/photo"), "storage-unavailable", 5)
        await unavailable(await server.request("GET", "/derived/photo-100x100.jpg"), "storage-unavailable", 5)
        # HEAD answers as GET does, without reading the file.
        head = await server.request("HEAD", "/original/photo")
        await treq.content(head)
        assert (head.code, header(head, "Retry-After")) == (503, "5")
        await content(await server.request("GET", "/healthz"), 200)

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
    stored: dict[str, bytes] = {}
    failed_id = ""
    for number in range(10):
        image_id = f"noise{number}"
        data = noise_png((600, 560), seed=number)
        response = await server.request("PUT", f"/original/{image_id}", data=data)
        if response.code == 201:
            await treq.content(response)
            stored[image_id] = data
            continue
        await unavailable(response, "storage-full", 60)
        failed_id = image_id
        break
    assert failed_id, "the 4 MB disk never filled up"
    assert len(stored) >= 2

    # Failed cleanly: no temporary file, no row, no file of it.
    assert files_under(files / ".tmp") == []
    assert await server.service.database.read(status_of_txn, failed_id) is None
    await content(await server.request("GET", f"/original/{failed_id}"), 404)
    originals = files_under(files / "originals")
    assert len(originals) == len(stored)
    for image_id, data in stored.items():
        assert await content(await server.request("GET", f"/original/{image_id}"), 200) == data

    # A derived image with no room to store it: 503 too, and nothing left.
    filler = fill(files)
    first = next(iter(stored))
    await unavailable(await server.request("GET", f"/derived/{first}-800x600.png"), "storage-full", 60)
    await unavailable(await server.request("GET", f"/derived/{first}-800x600.png"), "storage-full", 60)
    assert files_under(files / ".tmp") == []
    assert files_under(files / "derived") == []
    # An upload meanwhile fails the same way.
    await unavailable(
        await server.request("PUT", f"/original/{failed_id}", data=noise_png((600, 560), seed=99)),
        "storage-full",
        60,
    )
    assert files_under(files / ".tmp") == []
    await content(await server.request("GET", "/healthz"), 200)
    filler.unlink()

    # Room made through the API: the same ID is free, and everything works.
    victim = next(reversed(stored))
    await content(await server.request("DELETE", f"/original/{victim}"), 204)
    del stored[victim]
    retried = noise_png((600, 560), seed=99)
    assert (await put(server, failed_id, retried)).code == 201
    stored[failed_id] = retried
    for image_id, data in stored.items():
        assert await content(await server.request("GET", f"/original/{image_id}"), 200) == data
    await content(await server.request("GET", f"/derived/{first}-100x100.jpg"), 200)
    await content(await server.request("GET", "/healthz"), 200)
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
        await unavailable(
            await server.request("PUT", "/original/photo", data=data), "database-unavailable", 5
        )
        blobs.put = store  # type: ignore[method-assign]
        assert files_under(server.service.data_directory / "files" / "originals") == []
        assert files_under(server.service.data_directory / "files" / ".tmp") == []

        proxy.listen()
        await content(await server.request("GET", "/original/photo"), 404)
        # The client retries its upload once the database is back.
        assert (await put(server, "photo", data)).code == 201
        assert await content(await server.request("GET", "/original/photo"), 200) == data
    finally:
        await stop(server)
        await _drop_schema(postgres_server_url)
