"""Each metric, read from the registry after real requests to the real Site,
ImageAPI and ImageService in memory (work run at once, no threads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from pymager_tx.adapters.metrics.prometheus import PrometheusMetrics
from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.core.model import Size
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.metrics import Routes, Scrape
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.http.site import PymagerSite
from pymager_tx.ports import NO_METRICS, Metrics, Offload, immediate
from tests.fakes import ManualOffload
from tests.images import jpeg
from tests.results import result_of
from tests.web.test_api import POLICY

NONE = "(none)"


class Served:
    """The service behind a real PymagerSite, recording into its own registry."""

    def __init__(
        self,
        database: Database,
        root: Path,
        imaging: Offload = immediate,
        admission: ImageAdmission | None = None,
        metrics: Metrics | None = None,
        policy: ImagePolicy = POLICY,
    ) -> None:
        if metrics is None:
            metrics = PrometheusMetrics()
            metrics.open()
        self.metrics = metrics
        self.database = Database(database.engine, immediate, metrics=metrics)
        blobs = FilesystemBlobStore(root, immediate, metrics=metrics)
        if not root.is_file():
            result_of(blobs.recover())  # its temporary directory made
        # Removals heard, and a clock that stands still: held renditions stay fresh.
        self.cache = RenditionCache(1 << 20, 1 << 20, 60.0, clock=lambda: 0.0, metrics=metrics)
        self.cache.heard_removals(0)
        service = ImageService(
            self.database, blobs, imaging, policy, cache=self.cache, admission=admission, metrics=metrics
        )
        api = ImageAPI(service, WriteTokens(()), immediate, HttpPolicy())
        self.reactor = MemoryReactorClock()
        self.site = PymagerSite(
            api.resource(),
            max_upload_bytes=POLICY.max_upload_bytes,
            reactor=self.reactor,
            metrics=metrics,
            scrape=None if metrics is NO_METRICS else Scrape(metrics, immediate),
            routes=Routes(api.app.url_map),
        )

    def send(self, request: bytes) -> StringTransport:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        return transport

    def exchange(self, request: bytes) -> tuple[int, bytes, bytes]:
        answer = bytes(self.send(request).value())
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head, body

    def get(self, path: str, method: str = "GET") -> tuple[int, bytes, bytes]:
        return self.exchange(f"{method} {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())

    def put(self, path: str, data: bytes) -> int:
        head = f"PUT {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {len(data)}\r\n\r\n"
        return self.exchange(head.encode() + data)[0]

    def value(self, metric: str, **labels: str) -> float:
        assert isinstance(self.metrics, PrometheusMetrics)
        found = self.metrics.registry.get_sample_value(metric, labels)
        return 0.0 if found is None else found

    def requests(self, method: str, route: str, status: int) -> float:
        return self.value("pymager_http_requests_total", method=method, route=route, status=str(status))


@pytest.fixture
def served(database: Database, tmp_path: Path) -> Iterator[Served]:
    yield Served(database, tmp_path / "files")


def test_an_upload_is_counted_by_outcome_and_by_its_route_template(served: Served) -> None:
    assert served.put("/original/photo-1", jpeg((80, 60))) == 201
    assert served.put("/original/photo-1", jpeg((80, 60))) == 409
    assert served.put("/original/photo-2", b"not an image") == 400
    assert served.value("pymager_uploads_total", outcome="stored") == 1
    assert served.value("pymager_uploads_total", outcome="refused") == 2
    assert served.requests("PUT", "/original/<image_id>", 201) == 1
    assert served.requests("PUT", "/original/<image_id>", 409) == 1
    assert served.value("pymager_http_request_duration_seconds_count", route="/original/<image_id>") == 3
    # The template, never the path: no label names an image.
    assert "photo-1" not in scrape_text(served)


def test_a_derivation_is_counted_and_timed_then_served_from_memory(served: Served) -> None:
    assert served.put("/original/photo", jpeg((80, 60))) == 201
    for _ in range(3):
        assert served.get("/derived/photo-100x100.jpg")[0] == 200
    assert served.value("pymager_derivations_total", outcome="original") == 1
    assert served.value("pymager_derivation_duration_seconds_count") == 1
    assert served.value("pymager_derivation_duration_seconds_sum") > 0
    # The first lookup misses; the two after are served from memory.
    assert served.value("pymager_rendition_cache_requests_total", result="miss") == 1
    assert served.value("pymager_rendition_cache_requests_total", result="hit") == 2
    assert served.requests("GET", "/derived/<name>", 200) == 3
    assert served.value("pymager_http_request_duration_seconds_count", route="/derived/<name>") == 3


def test_a_derivation_from_a_large_originals_working_copy_is_counted_as_such(
    database: Database, tmp_path: Path
) -> None:
    # Thumbnails only: a working copy of a large original is worth making.
    served = Served(
        database, tmp_path / "files", policy=replace(POLICY, allowed_sizes=frozenset({Size(100, 100)}))
    )
    assert served.put("/original/large", jpeg((2000, 1500))) == 201
    assert served.get("/derived/large-100x100.jpg")[0] == 200
    # The working copy itself is derived from the original; the 100x100 from it.
    assert served.value("pymager_derivations_total", outcome="working_copy") == 1
    assert served.value("pymager_derivations_total", outcome="original") == 1


def test_a_derivation_refused_for_overload_and_the_queue_depth(database: Database, tmp_path: Path) -> None:
    imaging = ManualOffload()
    metrics = PrometheusMetrics()
    metrics.open()
    admission = ImageAdmission(1, 1, MemoryReactorClock(), metrics)
    served = Served(database, tmp_path / "files", imaging, admission, metrics)
    served_at_once = Served(database, tmp_path / "files", metrics=metrics)
    assert served_at_once.put("/original/a", jpeg((80, 60))) == 201
    assert served_at_once.put("/original/b", jpeg((80, 60))) == 201
    assert served_at_once.put("/original/c", jpeg((80, 60))) == 201
    # One on the image thread, one waiting: the queue is full.
    first = served.send(b"GET /derived/a-100x100.jpg HTTP/1.1\r\nHost: h\r\n\r\n")
    served.send(b"GET /derived/b-100x100.jpg HTTP/1.1\r\nHost: h\r\n\r\n")
    assert served.value("pymager_image_queue_depth") == 1
    status, _, _ = served.get("/derived/c-100x100.jpg")
    assert status == 503
    assert served.value("pymager_derivations_total", outcome="refused") == 1
    imaging.run_all()
    while imaging.pending:
        imaging.run_all()
    assert first.value().startswith(b"HTTP/1.1 200")
    assert served.value("pymager_image_queue_depth") == 0
    assert served.value("pymager_derivations_total", outcome="original") == 2


def test_a_deletion_is_counted(served: Served) -> None:
    assert served.put("/original/gone", jpeg((80, 60))) == 201
    assert served.get("/original/gone", "DELETE")[0] == 204
    assert served.get("/original/gone", "DELETE")[0] == 404
    assert served.value("pymager_deletions_total") == 1
    assert served.requests("DELETE", "/original/<image_id>", 204) == 1
    assert served.requests("DELETE", "/original/<image_id>", 404) == 1


def test_the_home_page_counts_under_its_route(served: Served) -> None:
    assert served.get("/")[0] == 200
    assert served.get("/", "POST")[0] == 405
    assert served.requests("GET", "/", 200) == 1
    assert served.requests("POST", NONE, 405) == 1


def test_requests_answered_before_any_route_count_under_none(served: Served) -> None:
    assert served.get("/nothing/here")[0] == 404
    assert served.get("/original/x", "BREW")[0] == 501
    assert served.get("/healthz", "PATCH")[0] == 405
    too_large = POLICY.max_upload_bytes * 2
    refused = served.exchange(
        b"PUT /original/big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % too_large
    )
    assert refused[0] == 413
    assert served.exchange(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")[0] == 400
    assert served.exchange(b"NONSENSE\r\n\r\n")[0] == 400
    assert served.requests("GET", NONE, 404) == 1
    assert served.requests("other", NONE, 501) == 1
    assert served.requests("PATCH", NONE, 405) == 1
    assert served.requests("PUT", NONE, 413) == 1
    assert served.requests("GET", NONE, 400) == 1
    assert served.requests("-", NONE, 400) == 1


def test_transactions_and_blob_operations_are_timed_by_name(served: Served) -> None:
    assert served.put("/original/photo", jpeg((80, 60))) == 201
    assert served.get("/original/photo")[0] == 200
    assert served.value("pymager_db_transaction_duration_seconds_count", name="claim_original") == 1
    assert served.value("pymager_db_transaction_duration_seconds_count", name="find_original") >= 1
    assert served.value("pymager_storage_operation_duration_seconds_count", op="put") == 1
    assert served.value("pymager_storage_operation_duration_seconds_count", op="get") >= 1
    assert served.value("pymager_db_transaction_errors_total", name="find_original") == 0


def test_a_failing_transaction_is_counted_as_an_error(served: Served) -> None:
    assert served.put("/original/photo", jpeg((80, 60))) == 201
    # The table a lookup reads is gone: the transaction fails, and the request with it.
    with served.database.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE derived")
    status, _, _ = served.get("/derived/photo-100x100.jpg")
    assert status in (500, 503)
    assert served.value("pymager_db_transaction_errors_total", name="lookup_derived") == 1
    assert served.value("pymager_db_transaction_duration_seconds_count", name="lookup_derived") == 1


def test_a_failing_blob_store_is_counted_as_an_error_and_the_upload_as_failed(
    database: Database, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.write_bytes(b"a file where the store's directory should be")
    served = Served(database, root)
    assert served.put("/original/photo", jpeg((80, 60))) == 503
    assert served.value("pymager_storage_operation_errors_total", op="put") == 1
    assert served.value("pymager_uploads_total", outcome="failed") == 1


def test_a_missing_blob_is_no_storage_error(served: Served, tmp_path: Path) -> None:
    assert served.put("/original/photo", jpeg((80, 60))) == 201
    for path in (tmp_path / "files").rglob("*"):
        if path.is_file():
            path.unlink()
    assert served.get("/original/photo")[0] == 404
    assert served.value("pymager_storage_operation_duration_seconds_count", op="get") == 1
    assert served.value("pymager_storage_operation_errors_total", op="get") == 0


def test_get_metrics_answers_the_prometheus_text_format(served: Served) -> None:
    assert served.get("/healthz")[0] == 200
    status, head, body = served.get("/metrics")
    assert status == 200
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    for name in (
        "pymager_http_requests",
        "pymager_http_request_duration_seconds",
        "pymager_derivations",
        "pymager_derivation_duration_seconds",
        "pymager_uploads",
        "pymager_deletions",
        "pymager_image_queue_depth",
        "pymager_rendition_cache_requests",
        "pymager_db_transaction_duration_seconds",
        "pymager_db_transaction_errors",
        "pymager_storage_operation_duration_seconds",
        "pymager_storage_operation_errors",
        "process_cpu_seconds",
        "python_info",
        "python_gc_objects_collected",
    ):
        assert name in families, name
    health = [
        sample
        for sample in families["pymager_http_requests"].samples
        if sample.labels == {"method": "GET", "route": "/healthz", "status": "200"}
    ]
    assert [sample.value for sample in health] == [1.0]
    assert served.get("/metrics", "HEAD")[2] == b""


def test_without_metrics_nothing_is_recorded_and_metrics_is_not_found(
    database: Database, tmp_path: Path
) -> None:
    served = Served(database, tmp_path / "files", metrics=NO_METRICS)
    assert served.put("/original/photo", jpeg((80, 60))) == 201
    status, _, body = served.get("/metrics")
    assert status == 404
    assert json.loads(body)["type"] == "/problems/not-found"


def scrape_text(served: Served) -> str:
    exposed: Any = served.metrics.exposition()
    return str(exposed[1].decode())
