"""Start-up, restart, recovery and development mode of the real service."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent

from pymager_tx.client import NotFound
from pymager_tx.config import load_settings
from pymager_tx.core.errors import DatabaseUnavailable
from pymager_tx.process import server
from pymager_tx.process.allocator import tunable
from pymager_tx.process.server import PymagerService
from tests.conftest import derivations
from tests.images import jpeg
from tests.integration.conftest import start, stop


@pytest_twisted.ensureDeferred
async def test_data_survives_a_restart(data_directory: Path, log_events: list[LogEvent]) -> None:
    data = jpeg((300, 200))
    first = await start(data_directory)
    await first.client().upload("photo", data)
    derived = (await first.client().get_derived("photo", 100, 100, "jpg")).data
    await stop(first)

    second = await start(data_directory)
    try:
        assert (await second.client().get_original("photo")).data == data
        assert (await second.client().get_derived("photo", 100, 100, "jpg")).data == derived
        assert derivations(log_events) == ["photo-100x100.jpeg"]
    finally:
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_development_mode_starts_empty(data_directory: Path) -> None:
    first = await start(data_directory)
    await first.client().upload("photo", jpeg())
    await stop(first)
    second = await start(data_directory, server={"dev_mode": True})
    try:
        with pytest.raises(NotFound):
            await second.client().get_original("photo")
        assert [p for p in (data_directory / "files").rglob("*") if p.is_file()] == []
    finally:
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_start_up_removes_what_a_crash_left(data_directory: Path) -> None:
    first = await start(data_directory)
    await stop(first)
    leftover = data_directory / "files" / ".tmp" / "put-interrupted"
    leftover.write_bytes(b"half an image")
    second = await start(data_directory)
    try:
        assert not leftover.exists()
    finally:
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_a_failed_start_is_reported(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "server": {"listen": "tcp:0:interface=127.0.0.1"},
            "storage": {"data_directory": str(tmp_path)},
            # Nothing listens on port 1: the database cannot be reached.
            "database": {"url": "postgresql+psycopg://pymager@127.0.0.1:1/pymager"},
        },
    )
    failures: list[object] = []
    service = PymagerService(settings, reactor, on_start_failure=failures.append)
    service.startService()
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            await service.when_listening()
        assert "connect" in raised.value.reason.lower()
        assert len(failures) == 1
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_what_start_up_made_is_left_out_of_full_collections(data_directory: Path) -> None:
    # A full pass of the collector over start-up's objects stalls the reactor.
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    running = await start(data_directory)
    try:
        assert gc.get_freeze_count() > 10_000
    finally:
        await stop(running)


@pytest.mark.skipif(not tunable(), reason="glibc's allocator only")
@pytest_twisted.ensureDeferred
async def test_freed_memory_is_given_back_only_while_image_work_is_idle(
    data_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given_back: list[str] = []
    monkeypatch.setattr(server, "give_back", lambda: given_back.append(threading.current_thread().name))
    running = await start(data_directory)
    try:
        service = running.service
        assert service._giving_back is not None and service._giving_back.running  # glibc: tuned
        await service._give_back_when_idle()
        assert len(given_back) == 1
        assert given_back[0] != threading.current_thread().name  # on a thread, not the reactor's
        monkeypatch.setattr(
            service.images, "image_load", lambda: {"busy": 1, "queued": 0, "threads": 2, "max_queue": 8}
        )
        assert service._give_back_when_idle() is None  # a picture is being made: kept
        assert len(given_back) == 1
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_a_stop_waits_for_a_rendition_sent_before_it_was_stored(
    data_directory: Path, log_events: list[LogEvent]
) -> None:
    running = await start(data_directory)
    service = running.service
    store = service.blobs.put
    held: list[tuple[str, bytes, Deferred[None]]] = []

    def put(key: str, data: bytes) -> Deferred[None]:
        if not key.startswith("derived/"):
            return store(key, data)
        stored: Deferred[None] = Deferred()
        held.append((key, data, stored))
        return stored

    service.blobs.put = put  # type: ignore[method-assign]
    await running.client().upload("photo", jpeg((300, 200)))
    sent = (await running.client().get_derived("photo", 100, 100, "jpg")).data
    assert len(held) == 1  # sent, not yet stored
    disposing = service.database.dispose
    settled_at_close: list[bool] = []

    def dispose() -> Deferred[None]:
        settled_at_close.append(service.images.derivations_settled().called)
        return disposing()

    service.database.dispose = dispose  # type: ignore[method-assign]
    await running.pool.closeCachedConnections()
    stopping = service.stopService()
    # The stop has begun; only now does the disk take the rendition.
    key, data, stored = held[0]
    store(key, data).chainDeferred(stored)
    await stopping
    assert settled_at_close == [True]  # stored and recorded before the database closed
    assert not [event for event in log_events if "still under way" in event.get("log_format", "")]

    again = await start(data_directory)
    try:
        assert (await again.client().get_derived("photo", 100, 100, "jpg")).data == sent
        assert derivations(log_events) == ["photo-100x100.jpeg"]  # recorded by the first
    finally:
        await stop(again)


@pytest_twisted.ensureDeferred
async def test_a_stop_leaves_a_derivation_that_never_settles_to_its_lease(
    data_directory: Path, log_events: list[LogEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "SETTLE_SECONDS", 0.2)
    running = await start(data_directory)
    blobs = running.service.blobs
    store = blobs.put
    never: Deferred[None] = Deferred()
    blobs.put = lambda key, data: never if key.startswith("derived/") else store(key, data)  # type: ignore[method-assign]
    await running.client().upload("photo", jpeg((300, 200)))
    await running.client().get_derived("photo", 100, 100, "jpg")
    await stop(running)
    assert [event for event in log_events if "still under way" in event.get("log_format", "")]
