"""GET /metrics from real servers on real sockets: one process in this
one, its own listen address, and `twistd pymager --workers 2`, whose
scrapes count every request of every process exactly once."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from pymager_tx.client import PymagerClient
from tests.images import jpeg
from tests.integration.conftest import Running, start, stop
from tests.integration.test_workers import LISTENING, SERVING, STARTED, ended
from tests.integration.test_workers import start as start_twistd

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def healthz(samples: Samples) -> float:
    """How many GET /healthz were answered 200."""
    return value(samples, "pymager_http_requests_total", method="GET", route="/healthz", status="200")


async def scrape(url: str, pool: HTTPConnectionPool) -> Samples:
    response = await treq.get(url + "/metrics", pool=pool)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/plain; version=0.0.4; charset=utf-8"]
    return parse((await response.content()).decode())


@pytest_twisted.ensureDeferred
async def test_a_real_server_counts_what_it_served(server: Running) -> None:
    client = server.client()
    await client.upload("photo", jpeg((400, 300)))
    for _ in range(3):
        await client.get_derived("photo", 100, 100, "jpg")
        # Recorded, not only sent: then held in memory for the next two.
        await server.service.images.derivations_settled()
    await client.delete("photo")
    samples = await scrape(server.url, server.pool)
    http = "pymager_http_requests_total"
    assert value(samples, http, method="PUT", route="/original/<image_id>", status="201") == 1
    assert value(samples, http, method="GET", route="/derived/<name>", status="200") == 3
    assert value(samples, http, method="DELETE", route="/original/<image_id>", status="204") == 1
    assert value(samples, "pymager_http_request_duration_seconds_count", route="/derived/<name>") == 3
    assert value(samples, "pymager_uploads_total", outcome="stored") == 1
    assert value(samples, "pymager_derivations_total", outcome="original") == 1
    assert value(samples, "pymager_derivation_duration_seconds_count") == 1
    assert value(samples, "pymager_deletions_total") == 1
    assert value(samples, "pymager_rendition_cache_requests_total", result="hit") == 2
    assert value(samples, "pymager_image_queue_depth") == 0
    assert value(samples, "pymager_db_transaction_duration_seconds_count", name="claim_original") == 1
    assert value(samples, "pymager_storage_operation_duration_seconds_count", op="put") == 2
    assert value(samples, "process_cpu_seconds_total") > 0
    assert ("python_info", ()) not in samples  # labelled: present with its labels
    assert any(name == "python_info" for name, _ in samples)
    assert not any("photo" in str(labels) for _, labels in samples)


@pytest_twisted.ensureDeferred
async def test_metrics_on_their_own_listen_address(tmp_path: Path) -> None:
    running = await start(tmp_path / "data", metrics={"listen": "tcp:0:interface=127.0.0.1"})
    try:
        port = running.service.metrics_port
        assert port is not None
        metrics_url = f"http://127.0.0.1:{port.getHost().port}"
        response = await running.request("GET", "/healthz")
        assert response.code == 200
        await response.content()
        samples = await scrape(metrics_url, running.pool)
        assert healthz(samples) == 1
        # Not on the main port, and nothing else on the metrics port.
        elsewhere = await running.request("GET", "/metrics")
        assert elsewhere.code == 404
        await elsewhere.content()
        other = await treq.get(metrics_url + "/healthz", pool=running.pool)
        assert other.code == 404
        await other.content()
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_with_metrics_disabled_nothing_is_served(tmp_path: Path) -> None:
    running = await start(tmp_path / "data", metrics={"enabled": False})
    try:
        response = await running.request("GET", "/metrics")
        assert response.code == 404
        await response.content()
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_with_two_workers_every_request_is_counted_exactly_once(tmp_path: Path) -> None:
    pool = HTTPConnectionPool(reactor, persistent=False)  # a connection each: dealt to both processes
    protocol, process = start_twistd(tmp_path, 2)
    try:
        (listening,) = await protocol.seen(LISTENING, 1)
        (started,) = await protocol.seen(STARTED, 1)
        await protocol.seen(SERVING, 1)
        url = f"http://127.0.0.1:{int(listening.group(1))}"
        client = PymagerClient(url, pool=pool, retries=0)
        requests = 40
        for _ in range(requests):
            await client.health()
        run = list((tmp_path / "pymager-data" / "metrics").iterdir())
        assert len(run) == 1
        # Both processes recorded (a counter file each): the sums below add two.
        writers = {re.sub(r"\D", "", path.name) for path in run[0].glob("counter_*.db")}
        assert len(writers) == 2
        for _ in range(4):  # whichever process answers, the sum is the same
            samples = await scrape(url, pool)
            total = healthz(samples)
            assert total == requests
        # A worker killed: its counts stay, its share of the live gauge goes.
        worker_pid = started.group(2).decode()
        assert (run[0] / f"gauge_livesum_{worker_pid}.db").exists()
        process_of_worker = int(worker_pid)
        os.kill(process_of_worker, signal.SIGKILL)
        await protocol.seen(STARTED, 2)
        await protocol.seen(SERVING, 2)
        assert not (run[0] / f"gauge_livesum_{worker_pid}.db").exists()
        samples = await scrape(url, pool)
        total = healthz(samples)
        assert total == requests
        assert value(samples, "pymager_image_queue_depth") == 0
    finally:
        process.signalProcess(signal.SIGTERM)  # type: ignore[attr-defined]
        await pool.closeCachedConnections()
    await ended(protocol)
