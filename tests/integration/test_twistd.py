"""`twistd pymager` as an operator runs it: a separate process, found through
Twisted's plugin system, configured from the command line."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from pymager_tx.client import PymagerClient
from tests.images import FIXTURES, opened

TWISTD = str(Path(sys.executable).parent / "twistd")
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class Twistd(ProcessProtocol):
    """Collects a twistd's output; tells when it listens and when it ends."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.signal: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if isinstance(reason.value, ProcessDone | ProcessTerminated) else None
        self.signal = getattr(reason.value, "signal", None)
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(f"twistd ended (exit {code}) before listening:\n{self.output.decode()}")
            )
        self.ended.callback(code)


def spawn(directory: Path, *arguments: str, protocol: Twistd | None = None) -> tuple[Twistd, Any]:
    protocol = protocol or Twistd()
    # No PYTHONPATH: twistd must find the plugin as installed (the README's
    # editable install puts the checkout on sys.path through a .pth file).
    process = reactor.spawnProcess(
        protocol,
        TWISTD,
        [TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pymager", *arguments],
        env=dict(os.environ),
        path=str(directory),
    )
    return protocol, process


@pytest_twisted.async_yield_fixture
async def pool() -> AsyncIterator[HTTPConnectionPool]:
    connections = HTTPConnectionPool(reactor, persistent=False)
    yield connections
    await connections.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_runs_uploads_derives_and_stops_cleanly(tmp_path: Path, pool: HTTPConnectionPool) -> None:
    protocol, process = spawn(tmp_path, "--listen", "tcp:0:interface=127.0.0.1")
    try:
        port = await protocol.listening
        client = PymagerClient(f"http://127.0.0.1:{port}", pool=pool, retries=0)
        original = await client.upload("yemmaGouraya", FIXTURES / "yemmaGourayaInBejaia.jpg")
        assert original.url == f"http://127.0.0.1:{port}/original/yemmaGouraya"
        derived = await client.get_derived("yemmaGouraya", 100, 100, "jpg")
        assert opened(derived.data).size == (100, 100)
    finally:
        process.signalProcess(signal.SIGTERM)
    # twistd shuts down in order, then ends itself with the signal it got,
    # as systemd expects of a service it stops.
    await protocol.ended
    assert protocol.signal == signal.SIGTERM
    # The embedded default data directory, under the working directory.
    assert (tmp_path / "pymager-data" / "pymager.sqlite3").exists()
    log = protocol.output.decode()
    assert "Stored original yemmaGouraya" in log
    assert '"PUT /original/yemmaGouraya HTTP/1.1" 201' in log
    assert "Main loop terminated" in log
    assert "Traceback" not in log


async def output_of_a_failed_start(directory: Path, *arguments: str) -> bytes:
    """What twistd said before it exited with status 1, never listening."""
    protocol, _ = spawn(directory, *arguments)
    protocol.listening.addErrback(lambda _: None)
    assert await protocol.ended == 1
    return protocol.output


@pytest_twisted.ensureDeferred
async def test_refuses_open_writes_on_every_interface(tmp_path: Path) -> None:
    assert b"write_tokens" in await output_of_a_failed_start(tmp_path, "--listen", "tcp:0")


@pytest_twisted.ensureDeferred
async def test_a_bad_configuration_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text("[images]\nallowed_sizes = ['big']\n")
    assert b"images.allowed_sizes" in await output_of_a_failed_start(tmp_path, "--config", str(config))


@pytest_twisted.ensureDeferred
async def test_a_failed_start_exits_with_an_error(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text('[database]\nurl = "postgresql+psycopg://pymager@127.0.0.1:1/pymager"\n')
    arguments = ("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1")
    assert b"could not start" in await output_of_a_failed_start(tmp_path, *arguments)


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_start_up_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        arguments = ("--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(data))
        output = (await output_of_a_failed_start(tmp_path, *arguments)).decode()
    finally:
        taken.close()
    assert (
        f"could not start: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use" in output
    )
    assert "Traceback" not in output
    assert not data.exists()
