"""Retries on 503 and on connection errors, after Retry-After or an
exponential backoff, on a Clock: what is asked when, and what is given up."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.error import ConnectionRefusedError

from pymager_tx.client import (
    DatabaseUnavailable,
    NotFound,
    Overloaded,
    ServiceUnavailable,
    StorageFull,
)
from pymager_tx.core import errors as core
from tests.client.harness import Harness
from tests.client.scripted import Scripted, created, held, plain, problem
from tests.images import png

OVERLOADED = problem(503, "overloaded", "Too busy", "every image thread is busy", Retry_After="2")


def image(request: Any) -> bytes:
    request.setHeader(b"Content-Type", b"image/png")
    request.setHeader(b"ETag", b'"' + b"ab" * 32 + b'"')
    return b"PNG bytes"


def test_a_503_is_asked_again_after_its_retry_after() -> None:
    script = Scripted([OVERLOADED, image])
    harness = Harness(script)
    got = harness.client.get_original("photo")
    harness.settle()
    assert len(script.asked) == 1 and not got.called
    harness.wait(1.99)
    assert len(script.asked) == 1 and not got.called
    harness.wait(0.01)
    assert len(script.asked) == 2
    assert harness.result(got).data == b"PNG bytes"


def test_without_retry_after_the_waits_double() -> None:
    unavailable = plain(503, b"upstream gone", Content_Type="text/plain")
    script = Scripted([unavailable, unavailable, image])
    harness = Harness(script, backoff=0.5)
    got = harness.client.get_original("photo")
    harness.settle()
    harness.wait(0.49)
    assert len(script.asked) == 1
    harness.wait(0.01)
    assert len(script.asked) == 2
    harness.wait(0.99)
    assert len(script.asked) == 2
    harness.wait(0.01)
    assert len(script.asked) == 3
    assert harness.result(got).data == b"PNG bytes"


def test_retry_after_is_capped_by_max_delay() -> None:
    full = problem(503, "storage-full", "Storage full", "no room", Retry_After="60")
    script = Scripted([full, image])
    harness = Harness(script, max_delay=5.0)
    got = harness.client.get_original("photo")
    harness.settle()
    harness.wait(5.0)
    assert harness.result(got).data == b"PNG bytes"


def test_retries_are_bounded_and_the_last_503_is_raised() -> None:
    script = Scripted([OVERLOADED] * 3)
    harness = Harness(script, retries=2)
    got = harness.client.get_derived("photo", 100, 100, "jpg")
    harness.settle()
    harness.wait(2)
    harness.wait(2)
    assert len(script.asked) == 3
    refusal = harness.failure(got, Overloaded).value
    assert isinstance(refusal, core.Overloaded) and isinstance(refusal, ServiceUnavailable)
    assert refusal.retry_after == 2 and refusal.status == 503
    assert [asked.path for asked in script.asked] == ["/derived/photo-100x100.jpg"] * 3


def test_refusals_other_than_503_are_never_retried() -> None:
    script = Scripted([problem(404, "not-found", "Not found", "no original photo")])
    harness = Harness(script)
    assert harness.failure(harness.client.delete("photo"), NotFound).value.detail == "no original photo"
    assert len(script.asked) == 1


def test_an_upload_of_bytes_is_sent_again_whole() -> None:
    data = png((2, 1))
    script = Scripted([OVERLOADED, created()])
    harness = Harness(script, "a-token-0123456789")
    uploaded = harness.client.upload("photo", data)
    harness.settle()
    harness.wait(2)
    assert harness.result(uploaded).sha256 == "ab" * 32
    assert [asked.body for asked in script.asked] == [data, data]
    assert {asked.headers["authorization"] for asked in script.asked} == {"Bearer a-token-0123456789"}
    assert {asked.headers["content-type"] for asked in script.asked} == {"application/octet-stream"}


def test_a_seekable_stream_is_sent_again_from_where_it_stood() -> None:
    data = png((2, 1))
    stream = io.BytesIO(b"skip" + data)
    stream.seek(4)
    script = Scripted(
        [problem(503, "database-unavailable", "Database unavailable", Retry_After="5"), created()]
    )
    harness = Harness(script)
    uploaded = harness.client.upload("photo", stream)
    harness.settle()
    harness.wait(5)
    harness.result(uploaded)
    assert [asked.body for asked in script.asked] == [data, data]


class Pipe(io.RawIOBase):
    """A stream that cannot go back: its bytes are sent once."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        part = self._data.read(len(buffer))
        buffer[: len(part)] = part
        return len(part)


def test_a_stream_that_cannot_go_back_is_not_retried() -> None:
    script = Scripted([OVERLOADED, created()])
    harness = Harness(script)
    uploaded = harness.client.upload("photo", Pipe(png((2, 1))))  # type: ignore[arg-type]
    harness.settle()
    assert harness.failure(uploaded, Overloaded)
    assert len(script.asked) == 1
    # Sent chunked: its length is not known beforehand.
    assert script.asked[0].headers.get("transfer-encoding") == "chunked"


class Flaky:
    """An HTTP client whose first `failures` requests fail to connect."""

    def __init__(self, http: Any, failures: int) -> None:
        self._http = http
        self.failures = failures
        self.attempts = 0

    def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.attempts <= self.failures:
            return fail(ConnectionRefusedError())
        return self._http.request(*args, **kwargs)


def flaky(script: Scripted, failures: int, **options: Any) -> tuple[Harness, Flaky]:
    harness = Harness(script, **options)
    connector = Flaky(harness.http, failures)
    harness.client._exchange.http = connector  # type: ignore[assignment]
    return harness, connector


def test_connection_errors_are_retried_with_backoff() -> None:
    script = Scripted([image])
    harness, connector = flaky(script, 2, backoff=1.0)
    got = harness.client.get_original("photo")
    harness.settle()
    harness.wait(1)
    assert connector.attempts == 2
    harness.wait(2)
    assert harness.result(got).data == b"PNG bytes"
    assert connector.attempts == 3


def test_connection_errors_past_the_retries_are_raised() -> None:
    harness, connector = flaky(Scripted([]), 10, retries=1)
    got = harness.client.head_original("photo")
    harness.settle()
    harness.wait(0.5)
    harness.failure(got, ConnectionRefusedError)
    assert connector.attempts == 2


def test_an_upload_of_a_stream_that_cannot_go_back_is_not_retried_on_connection_errors() -> None:
    harness, connector = flaky(Scripted([created()]), 1)
    harness.failure(harness.client.upload("photo", Pipe(b"x")), ConnectionRefusedError)  # type: ignore[arg-type]
    assert connector.attempts == 1


def test_an_answer_that_never_comes_times_out_and_is_asked_again() -> None:
    script = Scripted([held([]), image])
    harness = Harness(script, timeout=10.0, backoff=1.0)
    got = harness.client.get_original("photo")
    harness.settle()
    harness.wait(9.9)
    assert len(script.asked) == 1 and not got.called
    harness.wait(0.1)  # timed out; then the backoff
    harness.wait(1.0)
    assert len(script.asked) == 2
    assert harness.result(got).data == b"PNG bytes"


def test_a_timeout_without_retries_is_raised() -> None:
    harness = Harness(Scripted([held([])]), retries=0, timeout=3.0)
    got = harness.client.get_original("photo")
    harness.settle()
    harness.wait(2.9)
    assert not got.called
    harness.wait(0.1)
    assert "3.0 seconds" in str(harness.failure(got, TimeoutError).value)


def test_health_answers_503_at_once() -> None:
    script = Scripted([problem(503, "database-unavailable", "Database unavailable", Retry_After="5")])
    harness = Harness(script)
    refusal = harness.failure(harness.client.health(), DatabaseUnavailable).value
    assert refusal.retry_after == 5 and len(script.asked) == 1


@pytest.mark.parametrize("retries", [0, 1])
def test_storage_full_is_raised_with_its_retry_after(retries: int) -> None:
    full = problem(503, "storage-full", "Storage full", "no room", Retry_After="60")
    script = Scripted([full] * (retries + 1))
    harness = Harness(script, retries=retries, max_delay=1.0)
    uploaded = harness.client.upload("photo", b"bytes")
    harness.settle()
    harness.wait(1)
    refusal = harness.failure(uploaded, StorageFull).value
    assert refusal.retry_after == 60 and isinstance(refusal, core.StorageUnavailable)
    assert len(script.asked) == retries + 1
