"""Start-up, restart, recovery and development mode of the real service."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
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
