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


def test_a_turns_updates_are_summed_and_applied_when_the_turn_ends() -> None:
    """The batch several processes write their files through."""
    clock = Clock()
    batch = prometheus._TurnBatch(TurnBudget(clock).at_turn_end)
    first: list[float] = []
    second: list[float] = []
    for _ in range(5):
        batch.add(first.append, 1)
        batch.add(second.append, 0.5)
    # Nothing written during the turn ...
    assert first == second == []
    # ... each value once, summed, when it ends.
    clock.advance(0)
    assert (first, second) == ([5], [2.5])
    # An update from another thread is not the reactor's to batch: at once.
    thread = threading.Thread(target=batch.add, args=(first.append, 1))
    thread.start()
    thread.join()
    assert first == [5, 1]
    assert not clock.getDelayedCalls()


def test_one_process_counts_a_request_at_once_from_any_thread() -> None:
    metrics = PrometheusMetrics()
    metrics.open()
    hits = metrics.registry.get_sample_value
    metrics.http_request("GET", "/x", 200, 0.002)
    metrics.rendition_cache(True)
    # From another thread: into tallies of their own, summed in the scrape.
    thread = threading.Thread(target=metrics.http_request, args=("GET", "/x", 200, 0.02))
    thread.start()
    thread.join()
    thread = threading.Thread(target=metrics.rendition_cache, args=(False,))
    thread.start()
    thread.join()
    assert hits("pymager_http_requests_total", {"method": "GET", "route": "/x", "status": "200"}) == 2
    assert hits("pymager_http_request_duration_seconds_bucket", {"route": "/x", "le": "0.0025"}) == 1
    assert hits("pymager_http_request_duration_seconds_bucket", {"route": "/x", "le": "0.025"}) == 2
    assert hits("pymager_http_request_duration_seconds_count", {"route": "/x"}) == 2
    assert hits("pymager_http_request_duration_seconds_sum", {"route": "/x"}) == pytest.approx(0.022)
    assert hits("pymager_rendition_cache_requests_total", {"result": "hit"}) == 1
    assert hits("pymager_rendition_cache_requests_total", {"result": "miss"}) == 1


def test_one_process_times_the_blob_store_from_any_thread() -> None:
    metrics = PrometheusMetrics()
    metrics.open()
    hits = metrics.registry.get_sample_value
    metrics.storage_operation("get", 0.0002, False)  # a cached read, on the reactor's thread
    thread = threading.Thread(target=metrics.storage_operation, args=("get", 0.02, True))
    thread.start()
    thread.join()
    assert hits("pymager_storage_operation_duration_seconds_bucket", {"op": "get", "le": "0.00025"}) == 1
    assert hits("pymager_storage_operation_duration_seconds_count", {"op": "get"}) == 2
    assert hits("pymager_storage_operation_duration_seconds_sum", {"op": "get"}) == pytest.approx(0.0202)
    assert hits("pymager_storage_operation_errors_total", {"op": "get"}) == 1
