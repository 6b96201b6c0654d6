"""
The whole service, wired: thread pools, database, storage, HTTP.

Start-up runs in order: open the port, paused (a port in use stops start-up
before anything is written), refuse a deployment SQLite cannot serve safely
(pymager_tx.process.deployment), create the data directory, register this
process, wipe it in development mode, create the schema, join the database's
process leases (with [cluster] liveness = "database"), recover what a
crash left behind.  Only then does the port take connections (those that
came meanwhile wait in the backlog), so no request ever meets a store that
is half recovered.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as SettleTimeout
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from pymager_tx import __version__
from pymager_tx.adapters.metrics.prometheus import (
    MULTIPROCESS_VARIABLE,
    PrometheusMetrics,
    mark_process_dead,
    prepare_run_directory,
    run_directory,
)
from pymager_tx.adapters.sql.schema_version import prepare_at_startup
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.config import Settings
from pymager_tx.core.errors import Unavailable
from pymager_tx.http.connections import PortFeed, with_backlog
from pymager_tx.http.metrics import MetricsResource, Scrape
from pymager_tx.imaging.bands import Helpers
from pymager_tx.imaging.formats import prepare_codecs
from pymager_tx.ports import NO_METRICS, IStoreUpkeep, Metrics
from pymager_tx.process.allocator import give_back, keep_freed_memory
from pymager_tx.process.deployment import (
    MOUNTINFO,
    UnsafeDeployment,
    refuse_sqlite_on_a_network_filesystem,
    refuse_sqlite_shared_with_other_machines,
)
from pymager_tx.process.handoff import Dealer, Receiver
from pymager_tx.process.threads import Completions, ThreadPoolService
from pymager_tx.process.wiring import (
    Offloads,
    build_purger,
    build_service,
    build_site,
    build_store,
    storage_threads,
)
from pymager_tx.process.workers import Workers

# Blob reads and writes are short and mostly wait on the disk.
_IO_THREADS = 8
# Image threads run this much nicer than the rest of the process (Linux).
_IMAGE_NICENESS = 10
# Most bands a resize is cut into: past four, the filter support each band
# repeats costs more than another thread saves on a thumbnail.
_MOST_BANDS = 4
# How often freed memory is given back to the system while image work is idle.
GIVE_BACK_SECONDS = 10.0
# How long a stopping process waits for its derivations under way: those it
# answered early need milliseconds to be stored and recorded; one still
# rendering gets this long to finish for its client.  Past it, their claims
# are left to lapse, and to recovery after.
SETTLE_SECONDS = 10.0
# Endpoints whose connections are plain sockets, which the Dealer can accept
# (TLS ones go through the port's own wrapping).
_PLAIN_ENDPOINTS = (TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint)


class PymagerService(MultiService):
    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        tokens: tuple[str, ...] = (),
        on_start_failure: Callable[[Failure], object] | None = None,
        worker: int | None = None,
        workers: Workers | None = None,
        mountinfo: Path = MOUNTINFO,
    ) -> None:
        """worker: this process's number when another started it on its
        socket; workers: the processes this one starts on its own socket;
        mountinfo: where to read the mounts from (Linux's /proc)."""
        super().__init__()
        self.settings = settings
        self.worker = worker
        self.workers = workers
        self._dealer: Dealer | None = None
        self._receiver: Receiver | None = None
        self._removal_poll: LoopingCall | None = None
        self._sweeping: LoopingCall | None = None
        self._giving_back: LoopingCall | None = None
        self._sweep: Deferred[None] | None = None
        self._on_start_failure = on_start_failure
        self._reactor = reactor
        self._completions = Completions(reactor)
        self._port: IListeningPort | None = None
        self._serving = False  # start-up done: the port takes connections
        self._listening: list[Deferred[IListeningPort]] = []
        self._starting: Deferred[None] | None = None
        self._mountinfo = mountinfo

        data_directory = settings.storage.data_directory.absolute()
        self.data_directory = data_directory
        # Request bodies spooled to disk: on the data directory's filesystem,
        # not a tmpfs /tmp that would hold them in memory after all.
        self.upload_directory = data_directory / "uploads"
        database_threads = self._pool("pymager-db", settings.database.pool_size)
        io_threads = self._pool("pymager-io", _IO_THREADS)
        # By default the processes of --workers share the cores out.
        image_thread_count = settings.images.threads or max(1, _usable_cpus() // settings.server.workers)
        # Below the reactor and database threads in the kernel's eyes: with
        # every core decoding, a probe or a 503 still gets a core at once.
        image_threads = self._images = self._pool("pymager-images", image_thread_count, _IMAGE_NICENESS)
        self.metrics = _metrics_for(settings, worker, data_directory)
        self._metrics_port: IListeningPort | None = None
        self.admission = admission = ImageAdmission(
            image_thread_count, settings.images.max_queue or 4 * image_thread_count, reactor, self.metrics
        )
        # An idle image thread's core takes a share of a large resize
        # (imaging.bands): a request alone gets the process's cores, and
        # under load nobody gets more than one.
        bands = min(_MOST_BANDS, image_thread_count)
        helpers = None
        if bands > 1:
            resize_helpers = self._pool("pymager-resize", bands - 1, _IMAGE_NICENESS)
            helpers = Helpers(
                resize_helpers.pool.callInThread, bands, idle=lambda: admission.slots - admission.busy
            )

        bucket_threads = storage_threads(settings)
        offloads = Offloads(
            database_threads.offload,
            io_threads.offload,
            image_threads.offload,
            None if bucket_threads is None else self._pool("pymager-s3", bucket_threads).offload,
        )
        store = build_store(settings, offloads, timer=reactor, metrics=self.metrics)
        self.store = store
        self.database = store.database
        self.blobs = store.blobs
        self.owners = store.owners
        self.epoch = store.epoch
        self.purger = build_purger(settings, reactor)
        self.images = build_service(
            settings,
            store,
            image_threads.offload,
            self.admission,
            metrics=self.metrics,
            purger=self.purger,
            helpers=helpers,
        )
        # The scrape reads files in multiprocess mode: on the io threads.
        self.scrape = None if self.metrics is NO_METRICS else Scrape(self.metrics, io_threads.offload)
        self.site = build_site(
            settings,
            self.images,
            tokens,
            io_threads.offload,
            reactor,
            self.upload_directory,
            metrics=self.metrics,
            scrape=None if settings.metrics.listen else self.scrape,
        )
        if isinstance(self.metrics, PrometheusMetrics):
            # A request's counts join its turn's, applied when the turn ends.
            self.metrics.batch_per_turn(self.site.turns.at_turn_end)
        self._io = io_threads

    def _pool(self, name: str, size: int, niceness: int = 0) -> ThreadPoolService:
        # One Completions for every pool: at most its per_turn results a
        # turn in all, not per pool (four pools would make it four times).
        pool = ThreadPoolService(self._reactor, name, size, niceness, self._completions)
        pool.setServiceParent(self)
        return pool

    def when_listening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port once start-up is done, or fails with
        the reason start-up failed."""
        waiter: Deferred[IListeningPort] = Deferred()
        if self._serving and self._port is not None:
            waiter.callback(self._port)
        else:
            self._listening.append(waiter)
        return waiter

    def startService(self) -> None:
        super().startService()  # the thread pools
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    async def _start(self) -> None:
        url = self.database.engine.url
        listening = endpoint = None
        if self.worker is None:
            # The port first, paused: a port in use stops start-up before
            # anything is written, and connections that come during start-up
            # wait in the backlog until recovery is done.
            server = self.settings.server
            endpoint = serverFromString(self._reactor, with_backlog(server.listen, server.backlog))
            try:
                self._port = listening = await endpoint.listen(self.site)
            except CannotListenError as error:
                raise CannotServe(f"cannot listen on {server.listen}: {_reason(error)}") from None
            listening.stopReading()
            await self._listen_for_scrapes()
        # Before anything is written, not even the data directory.
        await self._io.offload(refuse_sqlite_on_a_network_filesystem, url, self._mountinfo)
        await self._io.offload(self.data_directory.mkdir, parents=True, exist_ok=True)
        if isinstance(self.metrics, PrometheusMetrics):
            directory = self.metrics.multiprocess_directory
            if directory is not None and self.worker is None:
                await self._io.offload(prepare_run_directory, directory)
            await self._io.offload(self.metrics.open)
        # Registered first, then looking for other machines: of two starting
        # at once, at least one sees the other.
        await self._io.offload(self.owners.register)
        await self._io.offload(refuse_sqlite_shared_with_other_machines, url, self.owners)
        if self.settings.server.dev_mode and self.worker is None:
            self.log.warn("Development mode: wiping the database and every stored file")
            await self.database.drop_schema()
            await IStoreUpkeep(self.blobs).wipe()
        await self._io.offload(self.upload_directory.mkdir, parents=True, exist_ok=True)
        await self._images.offload(prepare_codecs)
        if keep_freed_memory():
            self._giving_back = LoopingCall(self._give_back_when_idle)
            self._giving_back.clock = self._reactor
            self._giving_back.start(GIVE_BACK_SECONDS, now=False)
        await prepare_at_startup(self.database)
        heartbeat = self.store.heartbeat
        if heartbeat is not None:
            # Leases in the database: lapsed rows buried, this process
            # registered and renewing before recovery tells dead from live.
            await heartbeat.join()
            heartbeat.start()
        await self._io.offload(self.epoch.open)
        await self.images.recover()
        await self._io.offload(self.owners.bury_dead)
        sweep_seconds = self.settings.cluster.sweep_seconds
        if sweep_seconds > 0:
            # What peers that die from now on leave is finished by the live
            # (one at a time), not by whichever process starts next.
            self._sweeping = LoopingCall(self._sweep_once)
            self._sweeping.clock = self._reactor
            self._sweeping.start(sweep_seconds, now=False)
        memory = self.settings.memory_cache
        if (memory.max_bytes > 0 or memory.max_records > 0) and memory.poll_seconds > 0:
            # Deletions on other machines: heard as they commit where the
            # database tells (PostgreSQL), polled for in any case.
            self.store.removal_feed.start(self.epoch.bump)
            self._removal_poll = LoopingCall(lambda: Deferred.fromCoroutine(self.images.poll_removals()))
            self._removal_poll.clock = self._reactor
            # Its Deferred fires when the polling stops, which stopService does.
            self._removal_poll.start(memory.poll_seconds, now=True)
        if self.worker is not None:
            self._receiver = Receiver(self._reactor, self.site)
            self._receiver.start()
            self.site.connections.fed_by(self._receiver)
            self.log.info(
                "pymager-tx {version} (worker {worker}) serving the connections the first process "
                "passes it; data in {data_directory}",
                version=__version__,
                worker=self.worker,
                data_directory=str(self.data_directory),
            )
            _leave_start_up_out_of_collections()
            return
        assert listening is not None
        port = listening
        address = port.getHost()
        self.log.info(
            "pymager-tx {version} listening on {address}; data in {data_directory}",
            version=__version__,
            address=_describe(address),
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            data_directory=str(self.data_directory),
        )
        if self.workers is not None or isinstance(endpoint, _PLAIN_ENDPOINTS):
            # The Dealer accepts even without workers: unlike the port, which
            # takes a batch of connections per wake-up, growing without bound
            # in a flood, it stops at the connection that fills this process.
            self._dealer = Dealer(self._reactor, port, self.site)
            self._dealer.startReading()
            self.site.connections.fed_by(self._dealer)
        else:
            port.startReading()
            self.site.connections.fed_by(PortFeed(port))
        if self.workers is not None:
            assert self._dealer is not None
            directory = getattr(self.metrics, "multiprocess_directory", None)
            if directory is not None:
                # A worker that exits leaves its counts, not its live gauge.
                self.workers.on_exit = lambda pid: mark_process_dead(pid, directory)
            self.workers.startService()
            self.workers.start(self._dealer)
        self._serving = True
        _leave_start_up_out_of_collections()
        waiters, self._listening = self._listening, []
        for waiter in waiters:
            waiter.callback(port)

    def _give_back_when_idle(self) -> Deferred[None] | None:
        """Return the allocator's free memory to the system while no image
        work runs or waits (see process/allocator): a burst's memory is
        kept while it lasts, and given back within GIVE_BACK_SECONDS after."""
        load = self.images.image_load()
        if load is not None and (load.get("busy") or load.get("queued")):
            return None
        return self._io.offload(give_back)

    def _sweep_once(self) -> Deferred[None]:
        """One round of the sweep (app.recovery); a failure is logged, and
        the next round tries again."""

        async def sweep() -> None:
            try:
                await self.images.sweep(self.store.sweep_turn)
            except Exception as error:
                self.log.warn(
                    "The sweep of what dead processes left failed; the next one tries again: {reason}",
                    reason=getattr(error, "reason", None) or str(error),
                )

        self._sweep = Deferred.fromCoroutine(sweep())
        return self._sweep

    async def _listen_for_scrapes(self) -> None:
        """[metrics] listen: /metrics on an endpoint of its own (the first
        process's alone: with --workers, any process's scrape sums them all)."""
        listen = self.settings.metrics.listen
        if not listen or self.scrape is None:
            return
        try:
            endpoint = serverFromString(self._reactor, listen)
            self._metrics_port = await endpoint.listen(_ScrapeSite(MetricsResource(self.scrape)))
        except CannotListenError as error:
            raise CannotServe(f"cannot listen on {listen} ([metrics] listen): {_reason(error)}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise CannotServe(f"[metrics] listen: {listen!r} is not a Twisted endpoint ({error})") from None

    @property
    def metrics_port(self) -> IListeningPort | None:
        """Where [metrics] listen serves /metrics, once listening."""
        return self._metrics_port

    def _start_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, Unavailable):
            self.log.critical("pymager-tx could not start: {reason}", reason=failure.value.reason)
        elif isinstance(failure.value, UnsafeDeployment | CannotServe):
            self.log.critical("pymager-tx could not start: {reason}", reason=str(failure.value))
        else:
            self.log.failure("pymager-tx could not start", failure)
        if self._on_start_failure is not None:
            self._on_start_failure(failure)
        waiters, self._listening = self._listening, []
        for waiter in waiters:
            waiter.errback(failure)

    async def _stop(self) -> None:
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        # Connections closing from now on must not restart accepting.
        self.site.connections.fed_by(None)
        if self._receiver is not None:
            self._receiver.stopReading()
        if self._removal_poll is not None and self._removal_poll.running:
            self._removal_poll.stop()
        if self._sweeping is not None and self._sweeping.running:
            self._sweeping.stop()
        if self._giving_back is not None and self._giving_back.running:
            self._giving_back.stop()
        if self._sweep is not None and not self._sweep.called:
            await self._sweep  # before the database and the store close
        if self.workers is not None and self.workers.running:
            await self.workers.stopService()
        if self._dealer is not None:
            self._dealer.close()
        if self._port is not None:
            port, self._port = self._port, None
            await maybeDeferred(port.stopListening)
        if self._metrics_port is not None:
            metrics_port, self._metrics_port = self._metrics_port, None
            await maybeDeferred(metrics_port.stopListening)
        settled = await self._derivations_settle()
        await self.purger.stop()
        await self.store.removal_feed.stop()
        if self.store.heartbeat is not None and settled:
            # Seen gone at once, not a lease later.  Not while derivations
            # still run: peers would settle their claims (removing the files)
            # while they may still write; their leases lapse instead.
            await self.store.heartbeat.leave()
        await self.store.close()
        if isinstance(self.metrics, PrometheusMetrics):
            self.metrics.flush()  # the last turn's counts, before the files are left
        await self._io.offload(self.owners.release)
        self.epoch.close()
        await super().stopService()  # the thread pools, last

    async def _derivations_settle(self) -> bool:
        """Before the database and the store close (see SETTLE_SECONDS);
        False if some still run."""
        settling = self.images.derivations_settled()
        settling.addTimeout(SETTLE_SECONDS, self._reactor)
        try:
            await settling
        except SettleTimeout:
            self.log.warn(
                "Stopping with derivations still under way after {seconds:.0f}s; "
                "their claims are left to recovery once their leases lapse",
                seconds=SETTLE_SECONDS,
            )
            return False
        return True

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())


class _ScrapeSite(Site):
    """The site of [metrics] listen: scrapes are counted, not logged."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def _leave_start_up_out_of_collections() -> None:
    """What start-up made (modules, the URL map, the schema, pools) lives as
    long as the process: out of the collector's full passes, which walked
    it all (45 ms and more, every client stalled meanwhile)."""
    gc.freeze()


def _metrics_for(settings: Settings, worker: int | None, data_directory: Path) -> Metrics:
    """This process's metrics: none when [metrics] enabled is false; in
    memory when it serves alone; in the run's directory (multiprocess mode)
    when workers share the socket.  A worker takes the directory its first
    process named in the environment it inherited."""
    if not settings.metrics.enabled:
        return NO_METRICS
    if worker is not None:
        inherited = os.environ.get(MULTIPROCESS_VARIABLE)
        return PrometheusMetrics(Path(inherited) if inherited else None)
    if settings.server.workers > 1:
        return PrometheusMetrics(run_directory(data_directory))
    return PrometheusMetrics()


class CannotServe(Exception):
    """Start-up cannot go on, for a reason told in one line (a port in use)."""


def _reason(error: CannotListenError) -> str:
    """What the system said, without Twisted's wording around it."""
    cause = error.socketError
    return getattr(cause, "strerror", None) or str(cause)


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def _describe(address: Any) -> str:
    if hasattr(address, "port"):
        host = address.host
        return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    return str(getattr(address, "name", address))
