"""The direct path to a counter's and a histogram's values records what
prometheus_client's own inc() and observe() record, batched per reactor turn
or not."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram
from twisted.internet.task import Clock

from pymager_tx.adapters.metrics import prometheus
from pymager_tx.adapters.metrics.prometheus import PrometheusMetrics
from pymager_tx.http.turns import TurnBudget


def test_the_request_histogram_and_counter_match_observe_and_inc() -> None:
    metrics = PrometheusMetrics()
    metrics.open()
    reference = Histogram(
        "reference_seconds", "", ["route"], registry=CollectorRegistry(), buckets=prometheus._HTTP_BUCKETS
    ).labels("/x")
    durations = [0.0, 0.0005, 0.00051, 0.01, 0.3, 2.5, 29.9, 30.0, 31.0, 1e9]
    for seconds in durations:
        metrics.http_request("GET", "/x", 200, seconds)
        reference.observe(seconds)
    for bound in [*prometheus._HTTP_BUCKETS, float("inf")]:
        le = "+Inf" if bound == float("inf") else str(float(bound))
        ours = metrics.registry.get_sample_value(
            "pymager_http_request_duration_seconds_bucket", {"route": "/x", "le": le}
        )
        theirs = sum(1 for seconds in durations if seconds <= bound)
        assert ours == theirs, le
    assert metrics.registry.get_sample_value(
        "pymager_http_request_duration_seconds_sum", {"route": "/x"}
    ) == sum(durations)
    assert metrics.registry.get_sample_value(
        "pymager_http_requests_total", {"method": "GET", "route": "/x", "status": "200"}
    ) == len(durations)


def test_a_child_laid_out_otherwise_gets_the_public_methods() -> None:
    class Other:
        def inc(self, amount: float = 1) -> None: ...

        def observe(self, amount: float) -> None: ...

    other = Other()
    assert prometheus._incrementer(other) == other.inc
    assert prometheus._observer(other) == other.observe


def test_a_turns_request_updates_are_applied_together_when_the_turn_ends() -> None:
    clock = Clock()
    turns = TurnBudget(clock)
    metrics = PrometheusMetrics()
    metrics.batch_per_turn(turns.at_turn_end)
    metrics.open()
    written: list[float] = []
    hits = metrics.registry.get_sample_value

    def count_writes() -> None:
        written.append(hits("pymager_rendition_cache_requests_total", {"result": "hit"}) or 0.0)

    for _ in range(5):
        metrics.http_request("GET", "/x", 200, 0.002)
        metrics.rendition_cache(True)
    # Nothing written during the turn ...
    count_writes()
    assert hits("pymager_http_requests_total", {"method": "GET", "route": "/x", "status": "200"}) == 0
    # ... all of it once it ends, as observe() and inc() would have.
    clock.advance(0)
    count_writes()
    assert written == [0.0, 5.0]
    assert hits("pymager_http_requests_total", {"method": "GET", "route": "/x", "status": "200"}) == 5
    assert hits("pymager_http_request_duration_seconds_bucket", {"route": "/x", "le": "0.0025"}) == 5
    assert hits("pymager_http_request_duration_seconds_bucket", {"route": "/x", "le": "0.001"}) == 0
    assert hits("pymager_http_request_duration_seconds_sum", {"route": "/x"}) == pytest.approx(0.01)
    # An update from another thread is not the reactor's to batch: at once.
    thread = threading.Thread(target=metrics.rendition_cache, args=(False,))
    thread.start()
    thread.join()
    assert hits("pymager_rendition_cache_requests_total", {"result": "miss"}) == 1
    assert not clock.getDelayedCalls()


def test_flush_applies_the_turns_updates_at_once() -> None:
    clock = Clock()
    metrics = PrometheusMetrics()
    metrics.batch_per_turn(TurnBudget(clock).at_turn_end)
    metrics.open()
    metrics.rendition_cache(True)
    metrics.flush()
    assert metrics.registry.get_sample_value("pymager_rendition_cache_requests_total", {"result": "hit"}) == 1
