"""`twistd pymager --workers N`: N real processes on one listening socket,
supervised by the first, none outliving it."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import HTTPConnectionPool

from pymager_tx.client import PymagerClient
from tests.images import jpeg, opened
from tests.integration.test_twistd import Twistd, spawn

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
SERVING = re.compile(rb"\(worker (\d+)\) serving the connections")
STARTED = re.compile(rb"Started worker (\d+) \(pid (\d+)\)")
# Long enough for a loaded CI machine to start Python three times over.
PATIENCE = 60


class Watched(Twistd):
    """A twistd whose output can be waited on."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[re.Pattern[bytes], int, Deferred[list[re.Match[bytes]]]]] = []

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        for waiter in list(self._waiting):
            self._check(*waiter)

    errReceived = outReceived

    def seen(self, pattern: re.Pattern[bytes], count: int) -> Deferred[list[re.Match[bytes]]]:
        """Fires with the matches once pattern has matched count times."""
        waiter: Deferred[list[re.Match[bytes]]] = Deferred()
        waiter.addTimeout(PATIENCE, reactor)
        self._waiting.append((pattern, count, waiter))
        self._check(pattern, count, waiter)
        return waiter

    def _check(self, pattern: re.Pattern[bytes], count: int, waiter: Deferred[list[re.Match[bytes]]]) -> None:
        matches = list(pattern.finditer(self.output))
        if len(matches) >= count and not waiter.called:
            self._waiting.remove((pattern, count, waiter))
            waiter.callback(matches)


def start(directory: Path, workers: int) -> tuple[Watched, object]:
    protocol = Watched()
    _, process = spawn(
        directory, "--listen", "tcp:0:interface=127.0.0.1", "--workers", str(workers), protocol=protocol
    )
    return protocol, process


@pytest_twisted.async_yield_fixture
async def pool() -> AsyncIterator[HTTPConnectionPool]:
    connections = HTTPConnectionPool(reactor, persistent=False)
    yield connections
    await connections.closeCachedConnections()


def ended(protocol: Twistd) -> Deferred[int | None]:
    # processEnded waits for every writer of the output pipe, the workers
    # included: ended firing means that they are all gone too.
    return protocol.ended.addTimeout(PATIENCE, reactor)


@pytest_twisted.ensureDeferred
async def test_three_processes_serve_one_socket_and_stop_together(
    tmp_path: Path, pool: HTTPConnectionPool
) -> None:
    protocol, process = start(tmp_path, 3)
    try:
        (listening,) = await protocol.seen(LISTENING, 1)
        serving = await protocol.seen(SERVING, 2)
        assert sorted(match.group(1) for match in serving) == [b"1", b"2"]
        # Each is a process of the service, registered like any other.
        assert len(list((tmp_path / "pymager-data" / "processes").glob("*.lock"))) == 3
        client = PymagerClient(f"http://127.0.0.1:{int(listening.group(1))}", pool=pool, retries=0)
        await client.upload("photo", jpeg((400, 300)))
        for _ in range(6):
            derived = await client.get_derived("photo", 100, 100, "jpg")
            assert opened(derived.data).size == (100, 100)
    finally:
        process.signalProcess(signal.SIGTERM)  # type: ignore[attr-defined]
    await ended(protocol)
    assert protocol.signal == signal.SIGTERM
    # Every process released its registration on the way out.
    assert list((tmp_path / "pymager-data" / "processes").glob("*.lock")) == []


@pytest_twisted.ensureDeferred
async def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    protocol, process = start(tmp_path, 2)
    try:
        await protocol.seen(SERVING, 1)
        (started,) = await protocol.seen(STARTED, 1)
        os.kill(int(started.group(2)), signal.SIGKILL)
        again = await protocol.seen(STARTED, 2)
        assert again[1].group(1) == b"1"
        assert again[1].group(2) != started.group(2)
        await protocol.seen(SERVING, 2)
        assert b"Worker 1 (pid " in protocol.output
    finally:
        process.signalProcess(signal.SIGTERM)  # type: ignore[attr-defined]
    await ended(protocol)


@pytest_twisted.ensureDeferred
async def test_workers_stop_when_the_first_process_is_killed(tmp_path: Path) -> None:
    protocol, process = start(tmp_path, 3)
    await protocol.seen(SERVING, 2)
    process.signalProcess(signal.SIGKILL)  # type: ignore[attr-defined]
    await ended(protocol)
    assert protocol.output.count(b"The first process is gone; this worker stops") == 2
