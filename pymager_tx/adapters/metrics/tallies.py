"""
What every request adds to the metrics, kept in plain Python numbers.

A warm request is the service's cheapest answer (about 200 µs of CPU), and
it updates three or four values: its count, its duration's histogram, the
memory cache's hit counter, and the time of its file's read when it reads
one on the reactor's thread (adapters/storage/cached_read).  Through
prometheus_client's Counter and Histogram each update takes a lock (and,
with several processes, asks the kernel for the process id and writes a
memory-mapped file): with the calls around them, 4% of the instructions of
a warm request (bench/metrics_instructions.py).  Here the reactor's thread
adds to dicts and lists instead, with no lock: the only thread that writes
them.  A scrape reads them through a custom collector (prometheus_client's
documented way to expose numbers kept elsewhere), copying each dict and
list whole, which the GIL makes atomic.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

RequestKey = tuple[str, str, int]  # method, route template, status


class Histograms:
    """Observations by one label's value: a count per bucket (upper bounds
    as a Histogram has them, +Inf last), then the sum of the values."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = [*bounds, math.inf] if bounds[-1] != math.inf else list(bounds)
        self.by_label: dict[str, list[float]] = {}

    def observe(self, label: str, value: float) -> None:
        histogram = self.by_label.get(label)
        if histogram is None:
            histogram = self.by_label[label] = [0.0] * (len(self.bounds) + 1)
        # The first bucket whose bound is at least value, as observe() finds it.
        histogram[bisect_left(self.bounds, value)] += 1
        histogram[-1] += value


class RequestTallies:
    """Requests by method, route and status; their durations by route; the
    blob store's operations' durations by operation; memory cache lookups
    by result.  Written by one thread at a time (the caller sees to it);
    read by any."""

    def __init__(self, request_bounds: Sequence[float], storage_bounds: Sequence[float]) -> None:
        self.requests: dict[RequestKey, int] = {}
        self.durations = Histograms(request_bounds)
        self.storage = Histograms(storage_bounds)
        self.cache = [0, 0]  # misses, hits: indexed by the hit's truth

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.durations.observe(route, seconds)


Named = tuple[str, str]  # a metric's name and doc


class TalliesCollector(Collector):
    """The tallies of one process as the metrics Counters and Histograms
    would expose under the same names, summed over several tallies (the
    reactor's, and those of calls from other threads)."""

    def __init__(
        self,
        tallies: Sequence[RequestTallies],
        requests: Named,
        durations: Named,
        storage: Named,
        cache: Named,
    ) -> None:
        self._tallies = tallies
        self._requests = requests
        self._durations = durations
        self._storage = storage
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests: dict[RequestKey, int] = {}
        cache = [0, 0]
        for tallies in self._tallies:
            for key, count in dict(tallies.requests).items():
                requests[key] = requests.get(key, 0) + count
            cache = [mine + theirs for mine, theirs in zip(cache, list(tallies.cache), strict=True)]
        counted = CounterMetricFamily(*self._requests, labels=["method", "route", "status"])
        for (method, route, status), count in sorted(requests.items()):
            counted.add_metric([method, route, str(status)], count)
        yield counted
        yield _histogram(self._durations, "route", [tallies.durations for tallies in self._tallies])
        yield _histogram(self._storage, "op", [tallies.storage for tallies in self._tallies])
        looked_up = CounterMetricFamily(*self._cache, labels=["result"])
        looked_up.add_metric(["hit"], cache[True])
        looked_up.add_metric(["miss"], cache[False])
        yield looked_up


def _histogram(named: Named, label: str, sources: Sequence[Histograms]) -> HistogramMetricFamily:
    """The sum of several Histograms, each copied whole (atomic under the GIL)."""
    summed: dict[str, list[float]] = {}
    for source in sources:
        for value, histogram in dict(source.by_label).items():
            copied = list(histogram)
            total = summed.setdefault(value, [0.0] * len(copied))
            for index, observed in enumerate(copied):
                total[index] += observed
    family = HistogramMetricFamily(*named, labels=[label])
    bounds = sources[0].bounds
    for value, histogram in sorted(summed.items()):
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, observed in zip(bounds, histogram, strict=False):
            cumulative += observed
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric([value], buckets, histogram[-1])
    return family
