"""The direct path to a counter's and a histogram's values records what
prometheus_client's own inc() and observe() record."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from pymager_tx.adapters.metrics import prometheus
from pymager_tx.adapters.metrics.prometheus import PrometheusMetrics


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
