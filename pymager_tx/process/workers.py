"""
More processes for one listening socket: `twistd pymager --workers N`.

A process runs its HTTP and Python work on one core, so one process cannot
use a machine's other cores for serving.  The first process (the one twistd
started) opens the socket as usual, finishes start-up, then starts N - 1
workers: the same `twistd pymager` command, each given one end of a socket
pair as descriptor 3, over which the first process passes it its share of
the connections (pymager_tx.process.handoff).  They share the database and data
directory as any processes of one service do (README, "Several processes").

The first process supervises: a worker that exits is started again (after 1
second, doubling to 30 while it keeps failing at once), and stopping the
first process stops them all.  A worker stops when its pair closes, so none
outlives the first process, not even one killed with SIGKILL.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.process.handoff import CHANNEL_FD, Dealer, channel_pair

_RESTART_FIRST = 1.0
_RESTART_MOST = 30.0
# A worker that ran this long before exiting was not failing at start-up.
_HEALTHY_AFTER = 30.0
_STOP_GRACE = 10.0


def worker_arguments(plugin_arguments: Sequence[str], number: int, log_file: str | None) -> list[str]:
    """The command line of worker number: this same twistd plugin, with
    the options that only the first process may act on left out."""
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    log = "-" if log_file in (None, "-") else worker_log_file(log_file, number)
    return [*twistd, "--nodaemon", "--pidfile=", f"--logfile={log}", "pymager", *plugin_arguments]


def worker_log_file(log_file: str, number: int) -> str:
    """server.log -> server-worker1.log.  Not server.log.worker1: twistd
    takes every server.log.<anything>.<digits> for one of server.log's own
    rotated files, so the first process's rotation would trip over the
    worker's and stop logging."""
    path = Path(log_file)
    return str(path.with_name(f"{path.stem}-worker{number}{path.suffix}"))


class Workers(Service):
    """The first process's N - 1 workers, started and kept running."""

    log = Logger()

    def __init__(self, reactor: Any, count: int, arguments: Any) -> None:
        """arguments(number) is the command line of worker number."""
        self._reactor = reactor
        self._count = count
        self._arguments = arguments
        self._dealer: Dealer | None = None
        self._running: dict[int, _Worker] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._delays: dict[int, float] = {}
        # Told the pid of each worker that exits (its metrics are marked dead).
        self.on_exit: Callable[[int], object] | None = None

    def start(self, dealer: Dealer) -> None:
        """Start the workers, to serve the connections dealer deals them."""
        self._dealer = dealer
        for number in range(1, self._count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        assert self._dealer is not None
        worker = _Worker(self, number, self._reactor.seconds())
        arguments = self._arguments(number)
        ours, theirs = channel_pair()
        try:
            self._reactor.spawnProcess(
                worker,
                arguments[0],
                arguments,
                env=os.environ.copy(),
                childFDs={0: "w", 1: 1, 2: 2, CHANNEL_FD: theirs.fileno()},
            )
        finally:
            theirs.close()  # the worker has its own copy
        self._dealer.add(number, ours)
        self._running[number] = worker
        self.log.info("Started worker {number} (pid {pid})", number=number, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        self._running.pop(worker.number, None)
        if self.on_exit is not None and worker.pid is not None:
            try:
                self.on_exit(worker.pid)
            except Exception:
                self.log.failure("Could not mark worker {number}'s metrics dead", number=worker.number)
        if self._dealer is not None:
            self._dealer.remove(worker.number)
        if not self.running:
            return
        ran = self._reactor.seconds() - worker.started_at
        delay = _RESTART_FIRST if ran >= _HEALTHY_AFTER else self._delays.get(worker.number, _RESTART_FIRST)
        self._delays[worker.number] = min(delay * 2, _RESTART_MOST)
        self.log.warn(
            "Worker {number} (pid {pid}) exited ({why}); starting it again in {delay:.0f} s",
            number=worker.number,
            pid=worker.pid,
            why=reason.getErrorMessage(),
            delay=delay,
        )
        self._restarts[worker.number] = self._reactor.callLater(delay, self._spawn, worker.number)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        ending = [worker.stop() for worker in list(self._running.values())]
        return DeferredList(ending, consumeErrors=True)

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._running.values() if worker.pid is not None]


class _Worker(ProcessProtocol):
    def __init__(self, workers: Workers, number: int, started_at: float) -> None:
        self._workers = workers
        self.number = number
        self.started_at = started_at
        self.pid: int | None = None
        self._waiting: list[Deferred[None]] = []
        self._kill: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport: IProcessTransport = self.transport  # type: ignore[assignment]
        self.pid = transport.pid

    def stop(self) -> Deferred[None]:
        """SIGTERM (twistd stops cleanly on it), SIGKILL after a grace period."""
        ended: Deferred[None] = Deferred()
        self._waiting.append(ended)
        self._signal("TERM")
        self._kill = self._workers._reactor.callLater(_STOP_GRACE, self._signal, "KILL")
        return ended

    def _signal(self, name: str) -> None:
        with suppress(ProcessExitedAlready):
            self.transport.signalProcess(name)  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        self._workers._ended(self, reason)
        waiting, self._waiting = self._waiting, []
        for ended in waiting:
            ended.callback(None)
