"""
The metrics port (pymager_tx.ports.Metrics) on prometheus_client: the one
module that imports it.

One process keeps its metrics in memory, in a registry of its own.  With
--workers N, every process writes its values to memory-mapped files in one
directory per run (prometheus_client's multiprocess mode), and a scrape,
whichever process answers it, sums the files of all of them: each request
is counted once, by the process that served it, and the counts of a worker
that exited stay in the sum.  A worker that exits is marked dead, which
drops its share of the live gauge (the image queue).  The directory is
<data directory>/metrics/<host>-<pid of the first process>, emptied when
the first process starts; the directories of this host's runs whose first
process is gone are removed then too.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pymager_tx.adapters.metrics.tallies import RequestTallies, TalliesCollector
from pymager_tx.ports import Metrics

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# What generate_latest() writes, and every Prometheus reads.
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
# Requests: from a revalidation (well under a millisecond) to a large
# upload or a derivation that waited for a thread (seconds).
_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DERIVATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_IO_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


def run_directory(data_directory: Path) -> Path:
    """Where the processes of this run (the first one's pid) keep their values."""
    return data_directory / "metrics" / f"{socket.gethostname()}-{os.getpid()}"


def prepare_run_directory(directory: Path) -> None:
    """Empty the directory for a new run, and remove what the runs of this
    host left whose first process is gone.  Blocking: off the reactor."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    host = socket.gethostname()
    for other in directory.parent.iterdir():
        name, _, pid = other.name.rpartition("-")
        if name == host and pid.isdigit() and other != directory and not _alive(int(pid)):
            shutil.rmtree(other, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_process_dead(pid: int, directory: Path) -> None:
    """A worker exited: its share of the live gauges goes; its counts stay."""
    multiprocess.mark_process_dead(pid, str(directory))


# Every request updates a counter and a histogram: the path below takes
# them straight to their values, as Counter.inc() and Histogram.observe()
# do after checks that hold for any child made by labels() (a fifth of a
# request's cost of metrics, measured with bench/metrics_cost.py).  Should a
# later prometheus_client lay its metrics out otherwise, the public methods
# are used instead.


_Update = Callable[[float], None]
_Apply = Callable[[_Update, float], None]


def _at_once(update: _Update, amount: float) -> None:
    update(amount)


def _incrementer(child: Any) -> _Update:
    value = getattr(child, "_value", None)
    increment = getattr(value, "inc", None)
    return increment if callable(increment) else child.inc  # type: ignore[no-any-return]


def _observer(child: Any, apply: _Apply = _at_once) -> _Update:
    """child.observe, taken straight to its values; each value's update is
    handed to apply (at once, or added to a turn's batch)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(getattr(child, "_sum", None), "inc", None)
    if not (isinstance(bounds, list) and isinstance(buckets, list) and callable(total)):
        return child.observe  # type: ignore[no-any-return]
    if len(bounds) != len(buckets) or bounds[-1] != math.inf:
        return child.observe  # type: ignore[no-any-return]
    increments = [bucket.inc for bucket in buckets]

    def observe(seconds: float) -> None:
        apply(total, seconds)
        # The first bucket whose bound is at least seconds, as observe() finds it.
        apply(increments[bisect_left(bounds, seconds)], 1)

    return observe


class _TurnBatch:
    """The updates the reactor's thread makes in one turn of the reactor,
    summed per value and applied at the turn's end.  In multiprocess mode
    every update of a value takes a lock, asks the kernel for the process
    id and writes a memory-mapped file (3 µs a request, 8% of a warm
    request's CPU); summed, a busy turn pays that once per value.  A
    request's updates are batched before its answer is sent (Site.log runs
    in Request.finish, before the channel sends) and applied when the
    reactor's current pass over ready sockets ends: a scrape answered by
    another process can see a request the reactor has just answered only
    that much later, never twice and never not at all.  Updates from other
    threads are applied at once."""

    def __init__(self, at_turn_end: Callable[[Callable[[], None]], None]) -> None:
        self._at_turn_end = at_turn_end
        self._thread = threading.get_ident()
        self._amounts: dict[_Update, float] = {}

    def add(self, update: _Update, amount: float) -> None:
        if threading.get_ident() != self._thread:
            update(amount)
            return
        amounts = self._amounts
        if not amounts:
            self._at_turn_end(self.apply)
        amounts[update] = amounts.get(update, 0.0) + amount

    def apply(self) -> None:
        amounts, self._amounts = self._amounts, {}
        for update, amount in amounts.items():
            update(amount)


_REQUESTS = ("pymager_http_requests_total", "HTTP requests answered, by method, route template and status")
_REQUEST_SECONDS = (
    "pymager_http_request_duration_seconds",
    "Time from a request's arrival to its answer's end, by route template",
)
_STORAGE_SECONDS = (
    "pymager_storage_operation_duration_seconds",
    "Time of a blob store operation, by operation",
)
_CACHE = (
    "pymager_rendition_cache_requests_total",
    "Renditions looked up in memory: served from it (hit) or not (miss)",
)


class PrometheusMetrics(Metrics):
    """The metrics of this process.  multiprocess_directory: the run's
    directory when several processes serve (see the module's doc); the
    process then records into files there, from open() on.

    One process tallies each request in plain numbers (see tallies.py):
    the reactor's thread in tallies of its own, other threads under a lock
    in another.  Several processes write prometheus_client's files, each
    reactor turn's updates summed (_TurnBatch)."""

    def __init__(self, multiprocess_directory: Path | None = None) -> None:
        self.multiprocess_directory = multiprocess_directory
        self._open = False
        self._apply: _Apply = _at_once
        self._batch: _TurnBatch | None = None
        self._tallies: RequestTallies | None = None
        self._thread = threading.get_ident()  # the reactor's: the one that makes us
        self._elsewhere = RequestTallies(_HTTP_BUCKETS, _IO_BUCKETS)
        self._elsewhere_lock = threading.Lock()

    def batch_per_turn(self, at_turn_end: Callable[[Callable[[], None]], None]) -> None:
        """From now on, the request updates made on this thread (the
        reactor's) are summed and applied by a call at_turn_end schedules at
        the end of the reactor's turn (see _TurnBatch); before open()."""
        self._batch = _TurnBatch(at_turn_end)
        self._apply = self._batch.add

    def open(self) -> None:
        """Make the metrics: in multiprocess mode, once the run's directory
        exists.  Until then nothing is recorded."""
        directory = self.multiprocess_directory
        if directory is not None:
            # prometheus_client reads the variable when its values are made
            # (and the workers inherit it); its value class is chosen at
            # import, before the setting was known.
            os.environ[MULTIPROCESS_VARIABLE] = str(directory)
            if values.ValueClass is values.MutexValue:
                values.ValueClass = values.MultiProcessValue()
        # The _created series double a scrape for little use (a counter's
        # reset shows without them).
        disable_created_metrics()
        registry = self.registry = CollectorRegistry(auto_describe=True)
        if directory is None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            tallies = self._tallies = RequestTallies(_HTTP_BUCKETS, _IO_BUCKETS)
            registry.register(
                TalliesCollector(
                    [tallies, self._elsewhere], _REQUESTS, _REQUEST_SECONDS, _STORAGE_SECONDS, _CACHE
                )
            )
        else:
            self._requests = Counter(*_REQUESTS, ["method", "route", "status"], registry=registry)
            self._request_seconds = Histogram(
                *_REQUEST_SECONDS, ["route"], registry=registry, buckets=_HTTP_BUCKETS
            )
            self._cache = Counter(*_CACHE, ["result"], registry=registry)
            self._storage_seconds = Histogram(
                *_STORAGE_SECONDS, ["op"], registry=registry, buckets=_IO_BUCKETS
            )
            self._cache_hit = _incrementer(self._cache.labels("hit"))
            self._cache_miss = _incrementer(self._cache.labels("miss"))
        self._derivations = Counter(
            "pymager_derivations_total",
            'Derivations by outcome: derived from the "original" or the "working_copy", '
            '"refused" (overload), "failed"',
            ["outcome"],
            registry=registry,
        )
        self._derivation_seconds = Histogram(
            "pymager_derivation_duration_seconds",
            "Time a derivation took, from its claim to its record",
            registry=registry,
            buckets=_DERIVATION_BUCKETS,
        )
        self._uploads = Counter(
            "pymager_uploads_total",
            'Uploads by outcome: "stored", "refused" (the client\'s fault), "failed"',
            ["outcome"],
            registry=registry,
        )
        self._deletions = Counter(
            "pymager_deletions_total", "Originals deleted, with their renditions", registry=registry
        )
        self._queue = Gauge(
            "pymager_image_queue_depth",
            "Derivations and probes waiting for an image thread (summed over live processes)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._disk = Counter(
            "pymager_disk_cache_requests_total",
            "Images looked up in the local disk cache in front of the bucket: read from its copy "
            "(hit) or from the bucket (miss)",
            ["result"],
            registry=registry,
        )
        self._disk_hit = _incrementer(self._disk.labels("hit"))
        self._disk_miss = _incrementer(self._disk.labels("miss"))
        self._db_seconds = Histogram(
            "pymager_db_transaction_duration_seconds",
            "Time of a database transaction, by name",
            ["name"],
            registry=registry,
            buckets=_IO_BUCKETS,
        )
        self._db_errors = Counter(
            "pymager_db_transaction_errors_total",
            "Database transactions that failed, by name",
            ["name"],
            registry=registry,
        )
        self._storage_errors = Counter(
            "pymager_storage_operation_errors_total",
            "Blob store operations that failed (a missing blob is no failure), by operation",
            ["op"],
            registry=registry,
        )
        self._http_children: dict[
            tuple[str, str, int], tuple[Callable[[float], None], Callable[[float], None]]
        ] = {}
        self._db_observers: dict[str, _Update] = {}
        self._storage_observers: dict[str, _Update] = {}
        self._open = True

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if not self._open:
            return
        tallies = self._tallies
        if tallies is not None:
            if threading.get_ident() == self._thread:
                tallies.request(method, route, status, seconds)
            else:
                with self._elsewhere_lock:
                    self._elsewhere.request(method, route, status, seconds)
            return
        # The labelled children, found once: labels() costs more than the update.
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                _incrementer(self._requests.labels(method, route, str(status))),
                _observer(self._request_seconds.labels(route), self._apply),
            )
        count, observe = children
        self._apply(count, 1)
        observe(seconds)

    def derivation(self, outcome: str, seconds: float | None = None) -> None:
        if self._open:
            self._derivations.labels(outcome).inc()
            if seconds is not None:
                self._derivation_seconds.observe(seconds)

    def upload(self, outcome: str) -> None:
        if self._open:
            self._uploads.labels(outcome).inc()

    def deletion(self) -> None:
        if self._open:
            self._deletions.inc()

    def image_queue_depth(self, depth: int) -> None:
        if self._open:
            self._queue.set(depth)

    def rendition_cache(self, hit: bool) -> None:
        if not self._open:
            return
        tallies = self._tallies
        if tallies is None:
            self._apply(self._cache_hit if hit else self._cache_miss, 1)
        elif threading.get_ident() == self._thread:
            tallies.cache[hit] += 1
        else:
            with self._elsewhere_lock:
                self._elsewhere.cache[hit] += 1

    def disk_cache(self, hit: bool) -> None:
        if self._open:
            self._apply(self._disk_hit if hit else self._disk_miss, 1)

    def db_transaction(self, name: str, seconds: float, failed: bool) -> None:
        if not self._open:
            return
        observe = self._db_observers.get(name)
        if observe is None:
            # Two threads may both make it: labels() returns the same child.
            observe = self._db_observers[name] = _observer(self._db_seconds.labels(name))
        observe(seconds)
        if failed:
            self._db_errors.labels(name).inc()

    def storage_operation(self, op: str, seconds: float, failed: bool) -> None:
        if not self._open:
            return
        if failed:
            self._storage_errors.labels(op).inc()
        tallies = self._tallies
        if tallies is not None:
            if threading.get_ident() == self._thread:
                tallies.storage.observe(op, seconds)  # a file read on the reactor's thread
            else:
                with self._elsewhere_lock:
                    self._elsewhere.storage.observe(op, seconds)
            return
        observe = self._storage_observers.get(op)
        if observe is None:
            observe = self._storage_observers[op] = _observer(self._storage_seconds.labels(op))
        observe(seconds)

    def flush(self) -> None:
        """Apply this turn's updates now (a process that is about to exit)."""
        if self._batch is not None:
            self._batch.apply()

    def exposition(self) -> tuple[str, bytes] | None:
        """The scrape: this process's registry, or in multiprocess mode the
        sum of every process's files (read here: call it in a thread), with
        the process and Python collectors of the process answering.  The
        text format every Prometheus reads (0.0.4)."""
        if not self._open:
            return None
        if self.multiprocess_directory is None:
            return _TEXT_FORMAT, generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(self.multiprocess_directory))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        return _TEXT_FORMAT, generate_latest(registry)
