"""
Deletions made by other processes, heard as they commit: PostgreSQL's
LISTEN/NOTIFY.

Every transaction that begins a deletion also sends NOTIFY on
REMOVALS_CHANNEL (originals_txn.count_removal), which PostgreSQL delivers to
every listening session when, and only if, it commits.  Each process listens
on a connection of its own (not one of the pool's: it is held for good), in
a thread of its own that blocks on the socket for at most `wait` seconds at a
time, and hands each notification to the reactor (callFromThread), where
heard() voids what the process holds in memory.  So a delete on any machine
stops every other from serving the image's held renditions within
milliseconds of its commit.

A lost connection is logged and made again every `retry` seconds; once
listening again, heard() is called once, for whatever was missed meanwhile.
Meanwhile the removal counter's poll (pymager_tx.app.reads) still brings
every deletion within poll_seconds: the poll is the safety net, and the only
signal on other databases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from pymager_tx.adapters.sql.originals_txn import REMOVALS_CHANNEL
from pymager_tx.ports import IRemovalFeed

# libpq settings of the listening connection: fail fast when the server does
# not answer, and notice a connection that died silently (a network cut
# sends no reset) within seconds instead of the system's two hours.
_CONNECTION = {
    "autocommit": True,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


@implementer(IRemovalFeed)
class RemovalListener:
    log = Logger()

    def __init__(
        self,
        engine: Engine,
        me: str,
        call_from_thread: Callable[..., object],
        wait: float = 0.5,
        retry: float = 2.0,
    ) -> None:
        """engine: the PostgreSQL database's (only its URL is used); me:
        this process, whose own notifications are not heard (it voided its
        memory itself); call_from_thread: the reactor's."""
        assert engine.dialect.name == "postgresql", "LISTEN/NOTIFY is PostgreSQL's"
        self._engine = engine
        self._me = me
        self._call = call_from_thread
        self._wait = wait
        self._retry = retry
        self._heard: Callable[[], None] = lambda: None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._waiters: list[Deferred[None]] = []
        self._failing = False  # said so in the log

    def start(self, heard: Callable[[], None]) -> None:
        self._heard = heard
        self._thread = threading.Thread(target=self._run, name="pymager-removals", daemon=True)
        self._thread.start()

    def stop(self) -> Deferred[None]:
        """Fires once the thread ended (within `wait` seconds, or the
        connect timeout if it is connecting)."""
        if self._thread is None or self._ended:
            return succeed(None)
        self._stopping.set()
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # In the listening thread.

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._listen()
                except Exception as error:  # psycopg.Error, OSError: the server is away
                    self._call(self._lost, _first_line(error))
                    self._stopping.wait(self._retry)
        finally:
            self._call(self._end)

    def _listen(self) -> None:
        import psycopg  # PostgreSQL's driver, installed with the postgres extra

        arguments, parameters = self._engine.dialect.create_connect_args(self._engine.url)
        options: dict[str, Any] = {**parameters, **_CONNECTION}
        with psycopg.connect(*arguments, **options) as connection:
            connection.execute(f'LISTEN "{REMOVALS_CHANNEL}"')
            self._call(self._listening)
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=self._wait):
                    if notification.payload != self._me:
                        self._call(self._heard)

    # On the reactor thread.

    def _listening(self) -> None:
        if self._failing:
            self.log.info("Listening for deletions again")
            self._failing = False
        # Deletions may have committed while nobody listened.
        self._heard()

    def _lost(self, reason: str) -> None:
        if not self._failing:
            self._failing = True
            self.log.warn(
                "Cannot listen for deletions; the removal counter's poll brings them meanwhile: {reason}",
                reason=reason,
            )

    def _end(self) -> None:
        self._ended = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
