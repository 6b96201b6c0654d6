"""
What every request adds to the metrics, kept in plain Python numbers.

A warm request is the service's cheapest answer (about 200 µs of CPU), and
it updates three values: its count, its duration's histogram and the memory
cache's hit counter.  Through prometheus_client's Counter and Histogram each
update takes a lock (and, with several processes, asks the kernel for the
process id and writes a memory-mapped file): with the calls around them,
4% of the instructions of a warm request (bench/metrics_instructions.py).
Here the reactor's thread adds to dicts and lists instead, with no lock:
the only thread that writes them.  A scrape reads them through a custom
collector (prometheus_client's documented way to expose numbers kept
elsewhere), copying each dict and list whole, which the GIL makes atomic.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

RequestKey = tuple[str, str, int]  # method, route template, status


class RequestTallies:
    """Requests by method, route and status; their durations by route (a
    count per histogram bucket, then the sum of the seconds); memory cache
    lookups by result.  Written by one thread at a time (the caller sees to
    it); read by any."""

    def __init__(self, bounds: Sequence[float]) -> None:
        # The upper bounds of the buckets, +Inf last, as Histogram has them.
        self.bounds = [*bounds, math.inf] if bounds[-1] != math.inf else list(bounds)
        self.requests: dict[RequestKey, int] = {}
        self.durations: dict[str, list[float]] = {}
        self.cache = [0, 0]  # misses, hits: indexed by the hit's truth

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = [0.0] * (len(self.bounds) + 1)
        # The first bucket whose bound is at least seconds, as observe() finds it.
        histogram[bisect_left(self.bounds, seconds)] += 1
        histogram[-1] += seconds


class TalliesCollector(Collector):
    """The tallies of one process as the metrics a Counter and a Histogram
    would expose under the same names, summed over several tallies (the
    reactor's, and those of calls from other threads)."""

    def __init__(
        self,
        tallies: Sequence[RequestTallies],
        requests: tuple[str, str],
        durations: tuple[str, str],
        cache: tuple[str, str],
    ) -> None:
        """requests, durations, cache: the name and doc of each metric."""
        self._tallies = tallies
        self._requests = requests
        self._durations = durations
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests: dict[RequestKey, int] = {}
        durations: dict[str, list[float]] = {}
        cache = [0, 0]
        bounds = self._tallies[0].bounds
        for tallies in self._tallies:
            for key, count in dict(tallies.requests).items():
                requests[key] = requests.get(key, 0) + count
            for route, histogram in dict(tallies.durations).items():
                copied = list(histogram)
                summed = durations.setdefault(route, [0.0] * len(copied))
                for index, value in enumerate(copied):
                    summed[index] += value
            cache = [mine + theirs for mine, theirs in zip(cache, list(tallies.cache), strict=True)]
        counted = CounterMetricFamily(*self._requests, labels=["method", "route", "status"])
        for (method, route, status), count in sorted(requests.items()):
            counted.add_metric([method, route, str(status)], count)
        yield counted
        timed = HistogramMetricFamily(*self._durations, labels=["route"])
        for route, histogram in sorted(durations.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, observed in zip(bounds, histogram, strict=False):
                cumulative += observed
                buckets.append((floatToGoString(bound), cumulative))
            timed.add_metric([route], buckets, histogram[-1])
        yield timed
        looked_up = CounterMetricFamily(*self._cache, labels=["result"])
        looked_up.add_metric(["hit"], cache[True])
        looked_up.add_metric(["miss"], cache[False])
        yield looked_up
