"""Several real `twistd pymager` nodes, as on machines that share no disk:
each its own data directory, all on one PostgreSQL database and one bucket
(reached through a TcpProxy each, so that a test can cut or stall a node's
bucket), with leases in the database."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import treq
from sqlalchemy import Engine, text
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from pymager_tx.adapters.storage.s3_client import make_client
from tests.conftest import S3Server
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_twistd import spawn
from tests.integration.test_workers import LISTENING, PATIENCE, Watched

ADMIN = str(Path(sys.executable).parent / "pymager-admin")
JOINED = re.compile(rb"Joined as (\S+), renewing")
# Short leases, so that a killed node's work is taken over in seconds; a
# renewal every second leaves three missed ones before a live node looks dead.
# No periodic sweep: what a killed node left waits for a start-up (or the
# sweep of the tests that turn it on), so that the tests see who finished it.
CLUSTER = {"liveness": "database", "heartbeat_seconds": 1.0, "lease_seconds": 4.0, "sweep_seconds": 0.0}


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """TOML of flat sections (JSON strings, numbers and lists are TOML)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


@dataclass
class Node:
    name: str
    directory: Path
    proxy: TcpProxy
    config: Path
    protocol: Watched = field(default_factory=Watched)
    process: Any = None
    url: str = ""
    owner: str = ""
    running: bool = False

    async def start(self) -> None:
        """Spawn the node; returns once it listens (recovery done)."""
        self.protocol = Watched()
        _, self.process = spawn(self.directory, "--config", str(self.config), protocol=self.protocol)
        self.running = True
        (listening,) = await self.protocol.seen(LISTENING, 1)
        (joined,) = await self.protocol.seen(JOINED, 1)
        self.url = f"http://127.0.0.1:{int(listening.group(1))}"
        self.owner = joined.group(1).decode()

    async def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        self.process.signalProcess(signal.SIGKILL)
        await self.protocol.ended.addTimeout(PATIENCE, reactor)
        self.running = False

    async def stop(self) -> None:
        if self.running:
            if not self.protocol.ended.called:
                self.process.signalProcess(signal.SIGTERM)
            await self.protocol.ended.addTimeout(PATIENCE, reactor)
            self.running = False
        (self.directory / f"{self.name}.log").write_bytes(self.protocol.output)

    def log_count(self, needle: str) -> int:
        return self.protocol.output.decode(errors="replace").count(needle)


@dataclass
class Cluster:
    nodes: list[Node]
    engine: Engine
    s3: S3Server
    prefix: str
    pool: HTTPConnectionPool

    def request(self, node: Node, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        return treq.request(method, node.url + path, pool=self.pool, **kwargs)

    async def fetch(self, node: Node, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        """Status, headers and body."""
        response = await self.request(node, method, path, **kwargs)
        return response.code, response.headers, await response.content()

    def query(self, sql: str, **parameters: Any) -> Deferred[list[Any]]:
        def run() -> list[Any]:
            with self.engine.connect() as connection:
                return list(connection.execute(text(sql), parameters))

        return deferToThread(run)

    def objects(self, below: str = "") -> Deferred[list[str]]:
        """Every object name under this cluster's prefix (and below)."""

        def run() -> list[str]:
            client = make_client(self.s3.settings())
            try:
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.s3.bucket, Prefix=f"{self.prefix}/{below}"
                )
                return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
            finally:
                client.close()

        return deferToThread(run)

    def unfinished_uploads(self) -> Deferred[list[str]]:
        def run() -> list[str]:
            client = make_client(self.s3.settings())
            try:
                answer = client.list_multipart_uploads(Bucket=self.s3.bucket, Prefix=f"{self.prefix}/")
                return [upload["Key"] for upload in answer.get("Uploads", [])]
            finally:
                client.close()

        return deferToThread(run)

    async def admin(self, *arguments: str, node: Node | None = None) -> tuple[int, str]:
        """pymager-admin with a node's configuration: exit status, output."""
        node = node or self.nodes[0]
        protocol = _Collect()
        reactor.spawnProcess(
            protocol,
            ADMIN,
            [ADMIN, *arguments, "--config", str(node.config)],
            env=dict(os.environ),
            path=str(node.directory),
        )
        status = await protocol.ended.addTimeout(PATIENCE * 2, reactor)
        return status, protocol.output.decode(errors="replace")


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", -1))


def node_settings(
    directory: Path,
    s3: S3Server,
    proxy_port: int,
    prefix: str,
    database_url: str,
    cluster: dict[str, Any] | None = None,
    s3_changes: dict[str, Any] | None = None,
) -> str:
    """cluster: changes to CLUSTER; s3_changes: to [storage.s3]."""
    upstream = urlsplit(s3.url)
    s3_section: dict[str, Any] = {
        "bucket": s3.bucket,
        "endpoint_url": f"{upstream.scheme}://127.0.0.1:{proxy_port}",
        "prefix": prefix,
        "max_attempts": 2,
        "connect_timeout": 2.0,
        # Longer than any test waits on a stalled bucket, shorter than its patience.
        "read_timeout": 20.0,
    }
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        s3_section |= {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key}
    s3_section |= s3_changes or {}
    return toml(
        {
            "server": {"listen": "tcp:0:interface=127.0.0.1"},
            "storage": {"data_directory": str(directory / "data"), "backend": "s3"},
            "storage.s3": s3_section,
            "database": {"url": database_url, "pool_size": 4},
            "cluster": CLUSTER | (cluster or {}),
            # Deletions must reach the other nodes by NOTIFY: the counter
            # poll is made too slow to be what tells them.
            "memory_cache": {"poll_seconds": 120.0},
            "images": {"allowed_sizes": ["100x100", "800x600", "40x30"], "max_queue": 100},
        }
    )


def upstream_port(s3: S3Server) -> int:
    port = urlsplit(s3.url).port
    assert port is not None, f"{s3.url} names no port"
    return port


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Ask check() every 20 ms until it is true; the seconds it took.
    Fails after `within` seconds."""
    started = reactor.seconds()
    while not await check():
        if reactor.seconds() - started > within:
            raise AssertionError(f"not within {within}s: {what}")
        await deferLater(reactor, 0.02)
    return float(reactor.seconds() - started)
