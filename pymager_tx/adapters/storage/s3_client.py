"""
The boto3 side of the bucket store: the settings it reads, its client and
its thread pool, each wait bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from threading import Thread
from typing import Any, Literal, Protocol

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from twisted.python.threadpool import ThreadPool


class SecretValue(Protocol):
    def get_secret_value(self) -> str: ...


class S3Options(Protocol):
    """What from_settings reads: pymager_tx.config.S3Settings provides it
    (named here by shape, as adapters never import the settings)."""

    @property
    def bucket(self) -> str: ...
    @property
    def endpoint_url(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def access_key_id(self) -> SecretValue | None: ...
    @property
    def secret_access_key(self) -> SecretValue | None: ...
    @property
    def addressing_style(self) -> str: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def max_pool_connections(self) -> int: ...
    @property
    def part_bytes(self) -> int: ...
    @property
    def abort_uploads_after(self) -> float: ...
    @property
    def request_checksums(self) -> str: ...
    @property
    def conditional_writes(self) -> Literal["auto", "on", "off"]: ...


def thread_count(options: S3Options) -> int:
    """Threads for the store's pool: one per connection, so that no call
    waits for a connection while holding a thread, nor the reverse."""
    return options.max_pool_connections


class _DaemonThreadPool(ThreadPool):
    # A call stuck on a dead bucket must not keep a dying process alive.
    threadFactory = staticmethod(partial(Thread, daemon=True))  # type: ignore[assignment]


def make_thread_pool(options: S3Options, name: str = "pymager-s3") -> ThreadPool:
    """The store's own pool, not started: start() it with the service, and
    stop() it after the store's users stopped; offload to it with
    twisted.internet.threads.deferToThreadPool(reactor, pool, ...)."""
    return _DaemonThreadPool(minthreads=0, maxthreads=thread_count(options), name=name)


def make_client(options: S3Options) -> Any:
    """A boto3 S3 client for options, its every wait bounded."""
    config = Config(
        region_name=options.region or None,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        # total_max_attempts counts every attempt, the first among them;
        # botocore's "max_attempts" counts retries only, one attempt more
        # than the setting says (a stalled bucket held start-up 3 x
        # read_timeout where the settings promised 2 x).
        retries={"total_max_attempts": options.max_attempts, "mode": "standard"},
        max_pool_connections=options.max_pool_connections,
        s3={"addressing_style": options.addressing_style},
        request_checksum_calculation=options.request_checksums,
        response_checksum_validation="when_supported",
        tcp_keepalive=True,
        user_agent_extra="pymager-tx",
    )
    credentials: dict[str, str] = {}
    if options.access_key_id is not None and options.secret_access_key is not None:
        credentials = {
            "aws_access_key_id": options.access_key_id.get_secret_value(),
            "aws_secret_access_key": options.secret_access_key.get_secret_value(),
        }
    # A session of its own: boto3's default session is shared and not thread-safe.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=options.endpoint_url or None, config=config, **credentials)


def read_fully(read: Callable[[int], bytes], size: int) -> bytes:
    """size bytes from read, fewer only at the end."""
    part = read(size)
    if len(part) == size or not part:
        return part
    parts = [part]
    got = len(part)
    while got < size and (more := read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)
