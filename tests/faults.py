"""
Faults the integration tests inflict on a running service, for real.

- CuttableProxy: a TCP forwarder in the test's reactor between the service
  and PostgreSQL, which can be cut (no more listening, every proxied
  connection aborted) and restored on the same port.
- Mounts: a small tmpfs (a disk that fills up) and a read-only bind mount (a
  filesystem the kernel remounted read-only after errors).  The tests run as
  root; a mount that fails fails the test with the reason, it never skips.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.protocols.portforward import ProxyFactory, ProxyServer

from tests.images import encode


class _TrackedProxyServer(ProxyServer):
    factory: CuttableProxy  # type: ignore[assignment]

    def connectionMade(self) -> None:
        self.lost: Deferred[None] = Deferred()
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.factory.open.discard(self)
        self.lost.callback(None)


class CuttableProxy(ProxyFactory):
    """Forwards 127.0.0.1:<port> to host:port until cut."""

    protocol = _TrackedProxyServer
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.open: set[_TrackedProxyServer] = set()
        self._port: IListeningPort | None = None
        self.listening_port = 0
        self.connections_made = 0

    def buildProtocol(self, addr: IAddress) -> ProxyServer:
        self.connections_made += 1
        return super().buildProtocol(addr)

    def listen(self) -> int:
        """Listen (on the same port as before, if it listened before)."""
        assert self._port is None, "already listening"
        self._port = reactor.listenTCP(self.listening_port, self, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.listening_port = self._port.getHost().port
        return self.listening_port

    async def cut(self) -> None:
        """New connections are refused, and every open one is dropped (both
        halves, with a reset), as when the database host goes away."""
        port, self._port = self._port, None
        assert port is not None, "not listening"
        await maybeDeferred(port.stopListening)
        waiting = []
        for server in list(self.open):
            waiting.append(server.lost)
            server.transport.abortConnection()
            if server.peer is not None:
                server.peer.transport.abortConnection()  # type: ignore[attr-defined]
        await DeferredList(waiting)
        assert not self.open

    async def close(self) -> None:
        if self._port is not None:
            await self.cut()


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}; "
            "these tests need root and mount(8), as in CI",
            pytrace=False,
        )


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of the given size mounted at path (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "pymager-test", str(path))
    try:
        yield path
    finally:
        unmount(path)


def make_read_only(path: Path) -> None:
    """Bind path onto itself, read-only: every write under it fails with EROFS."""
    _run("mount", "--bind", str(path), str(path))
    _run("mount", "-o", "remount,bind,ro", str(path))


def make_writable(path: Path) -> None:
    _run("umount", str(path))


def noise_png(size: tuple[int, int], seed: int) -> bytes:
    """A PNG that does not compress: about width * height * 3 bytes."""
    from PIL import Image

    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return encode(Image.frombytes("RGB", size, pixels), "PNG", compress_level=1)


def files_under(directory: Path) -> list[Path]:
    """Every file (not directory) below directory."""
    return sorted(path for path in directory.rglob("*") if not path.is_dir())


def fill(directory: Path) -> Path:
    """Write a file in directory until its filesystem has no room left."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(descriptor, chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    finally:
        os.close(descriptor)
    return filler
