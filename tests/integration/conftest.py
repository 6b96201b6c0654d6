"""A real pymager-tx on a real socket, with real thread pools, in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from pymager_tx.client import PymagerClient
from pymager_tx.config import load_settings
from pymager_tx.process.server import PymagerService

TOKEN = "integration-token-0123456789"


@dataclass
class Running:
    url: str
    service: PymagerService
    pool: HTTPConnectionPool

    def client(self, token: str | None = None, **options: Any) -> PymagerClient:
        """The project's own client on the test's pool.  No retries unless
        asked for: these tests look at every refusal as it is sent."""
        options.setdefault("retries", 0)
        return PymagerClient(self.url, token, pool=self.pool, reactor=reactor, **options)

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        """Raw HTTP, for what the client never sends (forms, malformed
        names, other methods) and for exact headers."""
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return treq.request(method, self.url + path, headers=headers, pool=self.pool, **kwargs)


async def start(
    data_directory: Path, tokens: tuple[str, ...] = (), database_url: str = "", **sections: dict[str, Any]
) -> Running:
    overrides: dict[str, dict[str, Any]] = {
        "server": {"listen": "tcp:0:interface=127.0.0.1"},
        "storage": {"data_directory": str(data_directory)},
        "database": {"url": database_url},
        # Room in the image queue for the bursts the tests send at once: they
        # test races, not overload (tests/unit/test_admission.py does that).
        "images": {
            "allowed_sizes": ["100x100", "800x600", "40x30"],
            "max_upload_bytes": 2_000_000,
            "max_queue": 100,
        },
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    service = PymagerService(load_settings(None, overrides), reactor, tokens)
    service.startService()
    port = await service.when_listening()
    # Not persistent: every connection closes with its response, so nothing
    # is left open in the reactor when a test ends.
    return Running(
        f"http://127.0.0.1:{port.getHost().port}", service, HTTPConnectionPool(reactor, persistent=False)
    )


async def stop(running: Running) -> None:
    await running.pool.closeCachedConnections()
    await running.service.stopService()


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    """The service on SQLite, and on PostgreSQL when one is configured."""
    running = await start(tmp_path / "data", database_url=database_url)
    yield running
    await stop(running)
    # Each test starts from an empty schema on a shared PostgreSQL database.
    if database_url.startswith("postgresql"):
        await _drop_schema(database_url)


@pytest_twisted.async_yield_fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(tmp_path / "data", tokens=(TOKEN,))
    yield running
    await stop(running)


@pytest.fixture
def data_directory(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def _drop_schema(database_url: str) -> None:
    from twisted.internet.threads import deferToThread

    from pymager_tx.adapters.sql.database import make_engine
    from pymager_tx.adapters.sql.schema_version import drop_txn

    def drop() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            with engine.begin() as connection:
                drop_txn(connection)
        finally:
            engine.dispose()

    await deferToThread(drop)
