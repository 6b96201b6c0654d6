"""What the S3 store does beyond the contract: whole objects or none, pages,
streams, upkeep, and credentials kept out of every error.

Against the S3 server of PYMAGER_TEST_S3_URL (see tests/conftest.py)."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
import pytest_twisted
from botocore.exceptions import EndpointConnectionError
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import LogEvent, formatEvent
from zope.interface.verify import verifyObject

from pymager_tx.adapters.storage.s3 import S3BlobStore
from pymager_tx.adapters.storage.s3_client import make_client, make_thread_pool, thread_count
from pymager_tx.core.errors import BlobExists, BlobNotFound, StorageUnavailable
from pymager_tx.ports import IBlobStore, IStoreUpkeep, every_key, immediate
from tests.conftest import S3Server
from tests.integration.cluster import upstream_port
from tests.integration.tcp_proxy import TcpProxy
from tests.results import failure_of, result_of

pytestmark = pytest.mark.s3

KEY = "originals/ab/cd/abcd/0123"
MIB = 1024 * 1024


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid4().hex[:12]}"


@pytest.fixture
def store(s3_server: S3Server, prefix: str) -> Iterator[S3BlobStore]:
    made = S3BlobStore.from_settings(s3_server.settings(prefix=prefix), immediate)
    result_of(made.recover())
    yield made
    result_of(made.wipe())


def small_parts(s3_server: S3Server, prefix: str, **options: Any) -> S3BlobStore:
    """A store that uploads blobs over 5 MiB (S3's smallest part) in parts."""
    return S3BlobStore(
        make_client(s3_server.settings()),
        s3_server.bucket,
        immediate,
        prefix=prefix,
        part_bytes=5 * MIB,
        **options,
    )


def uploads_below(store: S3BlobStore) -> list[dict[str, Any]]:
    answer = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    uploads: list[dict[str, Any]] = answer.get("Uploads", [])
    return uploads


def fail_part(store: S3BlobStore, number: int) -> None:
    """Make every attempt to send part `number` fail as if the store were cut off."""

    def cut(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber") == number:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    store._client.meta.events.register("before-parameter-build.s3.UploadPart", cut)


def test_provides_both_interfaces(store: S3BlobStore) -> None:
    assert verifyObject(IBlobStore, store)
    assert verifyObject(IStoreUpkeep, store)


def test_objects_live_below_the_prefix_and_keys_come_back_without_it(store: S3BlobStore, prefix: str) -> None:
    result_of(store.put(KEY, b"picture"))
    answer = store._client.get_object(Bucket=store.bucket, Key=f"{prefix}/{KEY}")
    assert answer["Body"].read() == b"picture"
    assert result_of(store.list("originals").next_page()) == [KEY]


def test_objects_outside_the_prefix_are_neither_listed_nor_wiped(
    s3_server: S3Server, store: S3BlobStore, prefix: str
) -> None:
    neighbour = S3BlobStore.from_settings(s3_server.settings(prefix=prefix + "-next"), immediate)
    result_of(neighbour.put(KEY, b"theirs"))
    result_of(store.put(KEY, b"ours"))
    result_of(store.wipe())
    assert result_of(keys_below(store, "originals")) == set()
    assert result_of(neighbour.get(KEY)) == b"theirs"
    result_of(neighbour.wipe())


def keys_below(store: S3BlobStore, below: str) -> Deferred[set[str]]:
    return Deferred.fromCoroutine(every_key(store, below))


def test_a_listing_reads_page_after_page(s3_server: S3Server, prefix: str) -> None:
    store = S3BlobStore(
        make_client(s3_server.settings()), s3_server.bucket, immediate, prefix=prefix, page_size=2
    )
    wanted = {f"derived/ab/cd/abcd/g1/{n}x{n}.jpeg" for n in range(1, 8)}
    for key in wanted:
        result_of(store.put(key, b"x"))
    listing = store.list("derived/ab/cd/abcd")
    pages = []
    while page := result_of(listing.next_page()):
        pages.append(page)
    assert len(pages) == 4
    assert all(len(page) <= 2 for page in pages)
    assert sorted(key for page in pages for key in page) == sorted(wanted)
    assert result_of(listing.next_page()) == []
    result_of(store.wipe())


def test_objects_that_are_no_keys_are_skipped_not_taken_for_the_end(s3_server: S3Server, prefix: str) -> None:
    store = S3BlobStore(
        make_client(s3_server.settings()), s3_server.bucket, immediate, prefix=prefix, page_size=2
    )
    # Names sorted before the key fill whole pages with objects that are not the store's.
    for name in ("derived/ab/A1", "derived/ab/A2", "derived/ab/A3", "derived/ab/A4"):
        store._client.put_object(Bucket=store.bucket, Key=f"{prefix}/{name}", Body=b"foreign")
    result_of(store.put("derived/ab/z", b"x"))
    assert result_of(store.list("derived").next_page()) == ["derived/ab/z"]
    # delete_prefix and wipe remove whatever is below, keys or not.
    result_of(store.delete_prefix("derived"))
    assert store._client.list_objects_v2(Bucket=store.bucket, Prefix=f"{prefix}/").get("KeyCount") == 0


def test_delete_prefix_deletes_more_than_a_page(s3_server: S3Server, prefix: str) -> None:
    store = S3BlobStore(
        make_client(s3_server.settings()), s3_server.bucket, immediate, prefix=prefix, page_size=3
    )
    for n in range(1, 11):
        store._client.put_object(Bucket=store.bucket, Key=f"{prefix}/derived/ab/cd/abcd/g1/{n}", Body=b"")
    requests: list[object] = []
    store._client.meta.events.register("before-call.s3.DeleteObjects", lambda **_: requests.append(1))
    result_of(store.delete_prefix("derived/ab/cd/abcd/g1"))
    assert result_of(keys_below(store, "derived")) == set()
    assert len(requests) == 4  # 3 + 3 + 3 + 1


def test_open_reads_a_large_object_a_part_at_a_time(store: S3BlobStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    result_of(store.put(KEY, data))
    reader = result_of(store.open(KEY))
    assert reader.size == len(data)
    parts = []
    while part := result_of(reader.read(128 * 1024)):
        assert len(part) <= 128 * 1024
        parts.append(part)
    assert len(parts) == 8
    assert b"".join(parts) == data
    result_of(reader.close())
    result_of(reader.close())


def test_a_broken_stream_resumes_where_it_stopped(store: S3BlobStore) -> None:
    data = bytes(range(256)) * 4096
    result_of(store.put(KEY, data))
    reader = result_of(store.open(KEY))
    first = result_of(reader.read(1000))
    reader._body.close()  # type: ignore[attr-defined]  # the connection drops
    rest = []
    while part := result_of(reader.read(300_000)):
        rest.append(part)
    assert first + b"".join(rest) == data


def test_a_stream_broken_after_the_object_changed_fails_rather_than_mix_two(store: S3BlobStore) -> None:
    result_of(store.put(KEY, b"a" * 100_000))
    reader = result_of(store.open(KEY))
    result_of(reader.read(10))
    # Written again (an image's object is never replaced: removed first).
    result_of(store.delete(KEY))
    result_of(store.put(KEY, b"b" * 100_000))
    reader._body.close()  # type: ignore[attr-defined]
    failure_of(reader.read(10)).trap(StorageUnavailable)


def test_a_large_put_goes_in_parts_and_leaves_no_upload(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix)
    data = bytes(range(256)) * (44 * 1024)  # 11 MiB: three parts
    result_of(store.put(KEY, data))
    assert result_of(store.get(KEY)) == data
    assert uploads_below(store) == []
    result_of(store.wipe())


def test_a_failed_put_leaves_no_object_and_no_upload(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix)
    fail_part(store, 2)
    failure = failure_of(store.put(KEY, b"x" * (11 * MIB)))
    failure.trap(StorageUnavailable)
    failure_of(store.get(KEY)).trap(BlobNotFound)
    assert result_of(store.size(KEY)) is None
    assert uploads_below(store) == []


def test_a_failed_put_leaves_the_previous_object(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix)
    result_of(store.put(KEY, b"before"))
    fail_part(store, 3)
    failure_of(store.put_file(KEY, io.BytesIO(b"x" * (11 * MIB)))).trap(StorageUnavailable)
    assert result_of(store.get(KEY)) == b"before"
    assert uploads_below(store) == []
    result_of(store.wipe())


def test_put_file_streams_large_and_small_files(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix)
    large = bytes(range(251)) * (45 * 1024)  # over two parts, not a multiple of one
    result_of(store.put_file(KEY, io.BytesIO(large)))
    assert result_of(store.get(KEY)) == large
    exactly_one_part = b"p" * (5 * MIB)
    result_of(store.put_file("originals/ab/cd/abcd/0124", io.BytesIO(exactly_one_part)))
    assert result_of(store.size("originals/ab/cd/abcd/0124")) == 5 * MIB
    result_of(store.put_file("originals/ab/cd/abcd/0125", io.BytesIO(b"")))
    assert result_of(store.get("originals/ab/cd/abcd/0125")) == b""
    assert uploads_below(store) == []
    result_of(store.wipe())


def test_recover_aborts_uploads_a_crashed_writer_left(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix, abort_uploads_after=timedelta(0))
    client = store._client
    client.create_multipart_upload(Bucket=store.bucket, Key=f"{prefix}/{KEY}")
    outside = client.create_multipart_upload(Bucket=store.bucket, Key=f"{prefix}-other/{KEY}")
    # A writer that may still be at work is left alone.
    patient = small_parts(s3_server, prefix)
    assert result_of(patient.recover()) == 0
    assert len(uploads_below(store)) == 1
    assert result_of(store.recover()) == 1
    assert uploads_below(store) == []
    client.abort_multipart_upload(
        Bucket=store.bucket, Key=f"{prefix}-other/{KEY}", UploadId=outside["UploadId"]
    )


def test_recover_fails_on_a_missing_bucket(s3_server: S3Server) -> None:
    store = S3BlobStore.from_settings(s3_server.settings(bucket="pymager-no-such-bucket"), immediate)
    failure = failure_of(store.recover())
    failure.trap(StorageUnavailable)
    assert "pymager-no-such-bucket" in failure.value.reason


def wrong_secret(s3_server: S3Server, **changes: Any) -> tuple[S3BlobStore, str, str]:
    key_id = s3_server.access_key_id or "AKIAPYMAGERTESTKEY01"
    secret = "wrong/secret+" + uuid4().hex
    settings = s3_server.settings(access_key_id=key_id, secret_access_key=secret, **changes)
    return S3BlobStore.from_settings(settings, immediate), key_id, secret


def assert_hidden(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_refused_credentials_are_unavailable_storage_and_never_shown(
    s3_server: S3Server, log_events: list[LogEvent]
) -> None:
    store, key_id, secret = wrong_secret(s3_server)
    for attempt in (
        store.put(KEY, b"x"),
        store.get(KEY),
        store.size(KEY),
        store.list("originals").next_page(),
    ):
        failure = failure_of(attempt)
        failure.trap(StorageUnavailable)
        error = failure.value
        # A HEAD answer has no body to name the error: its status does.
        assert any(code in error.reason for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "403"))
        assert error.detail in (
            "the image storage is failing; try again later",
            "the image storage cannot be listed; try again later",
        )
        assert_hidden([error.reason, error.detail, str(error), repr(error)], key_id, secret)
    assert_hidden([repr(store), *(formatEvent(event) for event in log_events)], key_id, secret)


def test_an_unreachable_store_is_unavailable_and_names_no_credential(s3_server: S3Server) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store, key_id, secret = wrong_secret(
        s3_server, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1, connect_timeout=1.0
    )
    failure = failure_of(store.get(KEY))
    failure.trap(StorageUnavailable)
    assert f"127.0.0.1:{port}" in failure.value.reason
    assert_hidden([failure.value.reason, failure.value.detail, repr(failure.value)], key_id, secret)


def test_secrets_echoed_by_a_store_are_scrubbed_from_reasons(s3_server: S3Server) -> None:
    store, key_id, secret = wrong_secret(s3_server)

    def echo(**_: Any) -> None:
        raise EndpointConnectionError(
            endpoint_url=f"http://{key_id}:{secret}@h/?Signature=f00dfeed&X-Amz-Credential=x"
        )

    store._client.meta.events.register("before-call.s3.GetObject", echo)
    error = failure_of(store.get(KEY)).value
    assert isinstance(error, StorageUnavailable)
    assert_hidden([error.reason], key_id, secret, "f00dfeed")


def test_a_thread_pool_of_its_own_sized_to_the_connections(s3_server: S3Server) -> None:
    settings = s3_server.settings(max_pool_connections=5)
    pool = make_thread_pool(settings)
    assert thread_count(settings) == pool.max == 5
    assert pool.name == "pymager-s3"


@pytest_twisted.ensureDeferred
async def test_calls_run_on_the_pool_off_the_reactor(s3_server: S3Server, prefix: str) -> None:
    settings = s3_server.settings(prefix=prefix, max_pool_connections=2)
    pool = make_thread_pool(settings)
    pool.start()
    try:
        store = S3BlobStore.from_settings(
            settings, lambda work, *args, **kwargs: deferToThreadPool(reactor, pool, work, *args, **kwargs)
        )
        await store.recover()
        await store.put(KEY, b"picture")
        assert await store.get(KEY) == b"picture"
        reader = await store.open(KEY)
        assert await reader.read(3) == b"pic"
        await reader.close()
        await store.wipe()
        await store.close()
    finally:
        pool.stop()


@pytest_twisted.ensureDeferred
async def test_a_stalled_bucket_is_given_up_after_max_attempts_of_read_timeout(
    s3_server: S3Server, prefix: str
) -> None:
    # A bucket that takes connections and never answers: each attempt is
    # one connection held read_timeout, and there are max_attempts of them,
    # not one more (botocore's own "max_attempts" counts retries only).
    proxy = TcpProxy(upstream_port(s3_server))
    port = await proxy.listen()
    settings = s3_server.settings(
        prefix=prefix, endpoint_url=f"http://127.0.0.1:{port}", read_timeout=1.0, max_attempts=2
    )
    pool = make_thread_pool(settings)
    pool.start()
    try:
        store = S3BlobStore.from_settings(
            settings, lambda work, *args, **kwargs: deferToThreadPool(reactor, pool, work, *args, **kwargs)
        )
        proxy.hold()
        try:
            await store.recover()
        except StorageUnavailable as error:
            assert "HeadBucket" in error.reason
        else:
            raise AssertionError("recover() succeeded against a bucket that never answers")
        assert proxy.accepted == 2
        await store.close()
    finally:
        pool.stop()
        await proxy.close()


def test_recover_stops_aborting_at_the_first_abort_that_fails(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix, abort_uploads_after=timedelta(0))
    client = store._client
    for number in range(3):
        client.create_multipart_upload(Bucket=store.bucket, Key=f"{prefix}/{KEY}{number}")
    tried: list[str] = []

    def cut(params: dict[str, Any], **_: Any) -> None:
        tried.append(params["Key"])
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    client.meta.events.register("before-parameter-build.s3.AbortMultipartUpload", cut)
    # Each abort that fails costs a call's whole retry budget: the first
    # ends the sweep, and the rest wait for the next.
    assert result_of(store.recover()) == 0
    assert len(tried) == 1
    assert len(uploads_below(store)) == 3
    client.meta.events.unregister("before-parameter-build.s3.AbortMultipartUpload", cut)
    assert result_of(store.recover()) == 3
    assert uploads_below(store) == []


def ignore_if_none_match(store: S3BlobStore) -> None:
    """Make the store behave as one that ignores If-None-Match: the header
    never reaches it."""

    def drop(request: Any, **_: Any) -> None:
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    store._client.meta.events.register("before-sign.s3", drop)


def lose_the_first_answer(store: S3BlobStore, operation: str) -> list[int]:
    """botocore sends the first `operation` again after it succeeded, as it
    does when the answer is lost on its way back; the statuses seen."""
    statuses: list[int] = []

    def again(response: Any, **_: Any) -> int | None:
        if response is not None and response[0] is not None:
            statuses.append(response[0].status_code)
        return 0 if len(statuses) == 1 else None

    store._client.meta.events.register_first(f"needs-retry.s3.{operation}", again)
    return statuses


def test_an_image_object_is_never_replaced(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix)
    result_of(store.recover())
    result_of(store.put(KEY, b"first"))
    refused = failure_of(store.put(KEY, b"second")).value
    assert isinstance(refused, BlobExists) and refused.key == KEY
    assert "412" in refused.reason
    # In parts too: the completion is refused, and the upload aborted.
    failure_of(store.put_file(KEY, io.BytesIO(b"x" * (11 * MIB)))).trap(BlobExists)
    assert result_of(store.get(KEY)) == b"first"
    assert uploads_below(store) == []
    # The probes of /readyz are rewritten under one key: never refused.
    result_of(store.put("probes/me", b"one"))
    result_of(store.put("probes/me", b"two"))
    assert result_of(store.get("probes/me")) == b"two"
    result_of(store.wipe())


@pytest.mark.parametrize("size", [100, 11 * MIB])
def test_a_write_retried_after_it_landed_is_done_not_refused(
    s3_server: S3Server, prefix: str, size: int
) -> None:
    store = small_parts(s3_server, prefix)
    result_of(store.recover())  # its probe's writes are done
    operation = "PutObject" if size < 5 * MIB else "CompleteMultipartUpload"
    statuses = lose_the_first_answer(store, operation)
    result_of(store.put(KEY, b"r" * size))
    assert statuses == [200, 412]  # its retry met the object it had stored
    assert result_of(store.size(KEY)) == size
    assert uploads_below(store) == []
    result_of(store.wipe())


def test_a_store_that_ignores_conditional_writes_is_written_without_them(
    s3_server: S3Server, prefix: str, log_events: list[LogEvent]
) -> None:
    store = small_parts(s3_server, prefix)
    ignore_if_none_match(store)
    result_of(store.recover())
    assert any("does not honour" in formatEvent(event) for event in log_events)
    result_of(store.put(KEY, b"first"))
    result_of(store.put(KEY, b"second"))
    assert result_of(store.get(KEY)) == b"second"
    # "on" requires them: start-up fails, saying why.
    required = small_parts(s3_server, prefix, conditional_writes="on")
    ignore_if_none_match(required)
    failure = failure_of(required.recover())
    failure.trap(StorageUnavailable)
    assert 'conditional_writes = "on"' in failure.value.reason
    # The probes were removed.
    assert not [key for key in every_probe(store) if "conditional" in key]
    result_of(store.wipe())


def test_conditional_writes_off_are_never_sent(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix, conditional_writes="off")
    result_of(store.recover())
    result_of(store.put(KEY, b"first"))
    result_of(store.put(KEY, b"second"))
    assert result_of(store.get(KEY)) == b"second"
    result_of(store.wipe())


def test_seaweedfs_honours_conditional_writes_and_on_starts(s3_server: S3Server, prefix: str) -> None:
    store = small_parts(s3_server, prefix, conditional_writes="on")
    result_of(store.recover())
    assert store._uploads._honours is True
    assert not [key for key in every_probe(store) if "conditional" in key]


def every_probe(store: S3BlobStore) -> list[str]:
    answer = store._client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}/probes/")
    return [entry["Key"] for entry in answer.get("Contents", [])]


def test_the_sweep_aborts_only_uploads_older_than_abort_uploads_after(
    s3_server: S3Server, prefix: str
) -> None:
    client = small_parts(s3_server, prefix)._client
    client.create_multipart_upload(Bucket=s3_server.bucket, Key=f"{prefix}/{KEY}")
    # A writer that may still be at work is left alone...
    assert result_of(small_parts(s3_server, prefix).sweep()) == 0
    assert len(uploads_below(small_parts(s3_server, prefix))) == 1
    # ... one whose upload is older than abort_uploads_after is not.
    store = small_parts(s3_server, prefix, abort_uploads_after=timedelta(0))
    assert result_of(store.sweep()) == 1
    assert uploads_below(store) == []
