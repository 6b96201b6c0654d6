"""Import and warm through the HTTP API of a running service, with
pymager_tx.client: the Uploader and Deriver of a service anywhere (a remote
cluster).  The client tries a 503 or a dropped connection again after the
Retry-After the service gives, so a busy service is waited for, not hammered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from twisted.web.client import HTTPConnectionPool

from pymager_tx.client import NotFound, ProblemError, PymagerClient
from pymager_tx.core.model import ResizeMode, Size

# A warm run waits out a busy service for minutes rather than failing.
_RETRIES = 10
_MAX_DELAY = 30.0


class HttpUploader:
    def __init__(self, client: PymagerClient) -> None:
        self._client = client

    async def stored_sha256(self, image_id: str) -> str | None:
        try:
            info = await self._client.head_original(image_id)
        except ProblemError as error:
            # A HEAD answer has no body to name its problem type: its status says it.
            if isinstance(error, NotFound) or error.status == 404:
                return None
            raise
        return info.sha256

    async def upload(self, image_id: str, path: Path) -> str:
        original = await self._client.upload(image_id, path)
        return original.sha256


class HttpDeriver:
    def __init__(self, client: PymagerClient) -> None:
        self._client = client

    async def derive(self, image_id: str, size: Size, extension: str, mode: ResizeMode) -> None:
        # A HEAD derives the rendition as a GET would, and sends no bytes back.
        await self._client.head_derived(image_id, size.width, size.height, extension, mode)


@asynccontextmanager
async def _client(url: str, token: str | None, reactor: Any, jobs: int) -> AsyncIterator[PymagerClient]:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = jobs
    client = PymagerClient(url, token, pool=pool, reactor=reactor, retries=_RETRIES, max_delay=_MAX_DELAY)
    try:
        yield client
    finally:
        await pool.closeCachedConnections()


@asynccontextmanager
async def http_uploader(url: str, token: str | None, reactor: Any, jobs: int) -> AsyncIterator[HttpUploader]:
    async with _client(url, token, reactor, jobs) as client:
        yield HttpUploader(client)


@asynccontextmanager
async def http_deriver(url: str, reactor: Any, jobs: int) -> AsyncIterator[HttpDeriver]:
    async with _client(url, None, reactor, jobs) as client:
        yield HttpDeriver(client)
