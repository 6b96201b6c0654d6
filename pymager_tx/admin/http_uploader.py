"""Import and warm through the HTTP API of a running service: the Uploader
and Deriver on pymager_tx.client (merged from its branch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymager_tx.admin.command import AdminError


@asynccontextmanager
async def http_uploader(url: str, token: str | None, reactor: Any, jobs: int) -> AsyncIterator[Any]:
    raise AdminError("--url needs pymager_tx.client, not in this build yet")
    yield


@asynccontextmanager
async def http_deriver(url: str, reactor: Any, jobs: int) -> AsyncIterator[Any]:
    raise AdminError("--url needs pymager_tx.client, not in this build yet")
    yield
