"""
Blobs as objects in a bucket of an S3-compatible store (AWS S3, SeaweedFS,
MinIO, Ceph RGW, Cloudflare R2, Garage).

boto3 blocks, so every call runs through the Offload given: in production a
thread pool of the store's own (make_thread_pool), as large as the client's
connection pool, so that a bucket that stalls holds its own threads and
connections, never the database's, the image threads or the reactor.  One
client serves every thread (botocore clients are thread-safe).

An object is whole or absent.  A PutObject is atomic; a blob larger than
part_bytes goes up in parts (multipart), and a multipart upload becomes an
object only when completed: a failure aborts it, and the upload a crashed
writer left (invisible to readers, but billed) is aborted by recover() once
older than abort_uploads_after (s3_writes holds those writes and aborts).
Keys are the hashed paths the service makes (pymager_tx.core.keys), below an
optional prefix inside the bucket.  An image's object is written once: with
If-None-Match: * where the store honours it (conditional_writes; "auto"
asks the store once, with a probe object written twice), so that no write,
however late or confused, ever replaces an object another write stored.

Failures become StorageUnavailable, for the web layer to answer 503: the
client sees a fixed detail, the log the reason, which names the operation,
the key and the store's error code, never a credential.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from urllib3.exceptions import HTTPError as URLLib3Error
from zope.interface import implementer

from pymager_tx.adapters.storage.s3_client import S3Options, make_client, thread_count
from pymager_tx.adapters.storage.s3_readers import Listing, ObjectReader
from pymager_tx.adapters.storage.s3_writes import ConditionalWrites, Uploads
from pymager_tx.core.errors import BlobNotFound, StorageUnavailable
from pymager_tx.core.keys import validate_key, written_once
from pymager_tx.ports import (
    NO_METRICS,
    IBlobReader,
    IBlobStore,
    IKeyListing,
    IStoreUpkeep,
    Metrics,
    Offload,
    timed,
)

_FAILING = "the image storage is failing; try again later"
_UNLISTED = "the image storage cannot be listed; try again later"
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
# Keys per ListObjectsV2 answer and per DeleteObjects request: S3's most.
_PAGE = 1000
_MIB = 1024 * 1024
# Object names (S3BlobStore.list hides the builtin within the class).
_Names = list[str]
# Anything shaped like a signature or a credential scope, wherever a message
# might echo a request.
_SIGNED = re.compile(r"(Credential|Signature|X-Amz-Credential|X-Amz-Signature|AWSAccessKeyId)=[^\s&,;]+")


def threads_for(options: S3Options) -> int:
    """Threads the store's pool needs (the composition root sizes it)."""
    return thread_count(options)


@implementer(IBlobStore, IStoreUpkeep)
class S3BlobStore:
    log = Logger()

    def __init__(
        self,
        client: Any,
        bucket: str,
        offload: Offload,
        *,
        prefix: str = "",
        part_bytes: int = 8 * _MIB,
        page_size: int = _PAGE,
        abort_uploads_after: timedelta = timedelta(days=1),
        secrets: tuple[str, ...] = (),
        endpoint: str = "",
        metrics: Metrics = NO_METRICS,
        conditional_writes: ConditionalWrites = "auto",
    ) -> None:
        """client: a boto3 S3 client (make_client); prefix: where the keys
        live inside the bucket; secrets: strings no error reason may show;
        conditional_writes: "on" to require If-None-Match: * on image
        writes, "off" never to send it, "auto" to use it where honoured."""
        if not 0 < page_size <= _PAGE:
            raise ValueError(f"page_size must be 1 to {_PAGE}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._offload = offload
        self._uploads = Uploads(self, part_bytes, conditional_writes)
        self._page_size = page_size
        self._abort_after = abort_uploads_after
        self._secrets = tuple(secret for secret in secrets if secret)
        self._endpoint = endpoint or "AWS"
        self._metrics = metrics

    @classmethod
    def from_settings(
        cls, options: S3Options, offload: Offload, metrics: Metrics = NO_METRICS
    ) -> S3BlobStore:
        """The store [storage.s3] describes, its calls run by offload (a
        pool from make_thread_pool)."""
        secrets = tuple(
            secret.get_secret_value()
            for secret in (options.access_key_id, options.secret_access_key)
            if secret is not None
        )
        return cls(
            make_client(options),
            options.bucket,
            offload,
            prefix=options.prefix,
            part_bytes=options.part_bytes,
            abort_uploads_after=timedelta(seconds=options.abort_uploads_after),
            secrets=secrets,
            endpoint=options.endpoint_url,
            metrics=metrics,
            conditional_writes=options.conditional_writes,
        )

    def __repr__(self) -> str:
        return f"<S3BlobStore bucket={self.bucket!r} prefix={self.prefix!r} endpoint={self._endpoint!r}>"

    def put(self, key: str, data: bytes) -> Deferred[None]:
        """Store data under key; an image's key only if no object is there
        (BlobExists if another write's is), where the store can tell."""
        return self._offload(
            timed(self._metrics, "put", self._put), self._object(key), data, written_once(key)
        )

    def put_file(self, key: str, file: BinaryIO) -> Deferred[None]:
        """Store what file holds from its position on, read a part at a time
        on a pool thread (so a large original is never held whole), as
        atomically as put().  Not part of IBlobStore: only this store has it."""
        return self._offload(
            timed(self._metrics, "put", self._put_stream), self._object(key), file.read, written_once(key)
        )

    def get(self, key: str) -> Deferred[bytes]:
        return self._offload(timed(self._metrics, "get", self._get), self._object(key))

    def open(self, key: str) -> Deferred[IBlobReader]:
        return self._offload(timed(self._metrics, "open", self._open), self._object(key))

    def size(self, key: str) -> Deferred[int | None]:
        return self._offload(timed(self._metrics, "size", self._size), self._object(key))

    def delete(self, key: str) -> Deferred[None]:
        return self._offload(timed(self._metrics, "delete", self._delete), self._object(key))

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        return self._offload(
            timed(self._metrics, "delete_prefix", self._delete_below), self._object(prefix) + "/"
        )

    def list(self, prefix: str) -> IKeyListing:
        return Listing(self, self._object(prefix) + "/")

    def recover(self) -> Deferred[int]:
        return self._offload(self._recover)

    def sweep(self) -> Deferred[int]:
        """Abort the multipart uploads older than abort_uploads_after, as
        start-up does: no live writer's upload is that old."""
        return self._offload(self._abort_old_uploads)

    def wipe(self) -> Deferred[None]:
        return self._offload(self._wipe)

    def close(self) -> Deferred[None]:
        """Close the client's connections (at shutdown)."""
        return self._offload(self._client.close)

    def _object(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str | None:
        """The store's key of an object name, None for an object that is
        not the store's (outside the prefix, or no key)."""
        if self.prefix:
            if not name.startswith(self.prefix + "/"):
                return None
            name = name[len(self.prefix) + 1 :]
        try:
            return validate_key(name)
        except ValueError:
            return None

    @property
    def _below_prefix(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    # The methods below run in a pool thread.

    @contextmanager
    def _errors(self, operation: str, name: str = "", detail: str = _FAILING) -> Iterator[None]:
        """Translate what boto3 raises: a missing object to BlobNotFound,
        anything else to StorageUnavailable with a reason safe to log."""
        try:
            yield
        except ClientError as error:
            answer = error.response.get("Error", {})
            code = str(answer.get("Code", "unknown"))
            if code in _MISSING and name:
                raise BlobNotFound(self._key(name) or name) from None
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            message = str(answer.get("Message", ""))[:300]
            reason = f"S3 {operation} of {self.bucket}/{name} at {self._endpoint}: {code} (HTTP {status})"
            raise StorageUnavailable(detail, self._scrub(f"{reason} {message}".rstrip())) from None
        except (BotoCoreError, URLLib3Error, OSError) as error:
            reason = f"S3 {operation} of {self.bucket}/{name}: {type(error).__name__}: {error}"
            raise StorageUnavailable(detail, self._scrub(reason)) from None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return _SIGNED.sub(r"\1=****", text)

    def _put(self, name: str, data: bytes, image: bool) -> None:
        self._uploads.put(name, data, image and self._uploads.conditional())

    def _put_stream(self, name: str, read: Callable[[int], bytes], image: bool) -> None:
        self._uploads.put_stream(name, read, image and self._uploads.conditional())

    def _get(self, name: str) -> bytes:
        with self._errors("GetObject", name):
            body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def _open(self, name: str) -> IBlobReader:
        with self._errors("GetObject", name):
            answer = self._client.get_object(Bucket=self.bucket, Key=name)
        return ObjectReader(self, name, answer)

    def _size(self, name: str) -> int | None:
        try:
            with self._errors("HeadObject", name):
                answer = self._client.head_object(Bucket=self.bucket, Key=name)
        except BlobNotFound:
            return None
        return int(answer["ContentLength"])

    def _delete(self, name: str) -> None:
        with self._errors("DeleteObject", name):
            self._client.delete_object(Bucket=self.bucket, Key=name)

    def _delete_below(self, below: str) -> None:
        """Delete every object whose name starts with below, a page (one
        DeleteObjects request) at a time."""
        token: str | None = None
        while True:
            names, token = self._list_page(below, token, self._page_size)
            if names:
                with self._errors("DeleteObjects", below):
                    answer = self._client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": name} for name in names], "Quiet": True},
                    )
                failed = answer.get("Errors", [])
                if failed:
                    first = failed[0]
                    reason = (
                        f"S3 DeleteObjects below {self.bucket}/{below}: {len(failed)} not deleted, "
                        f"{first.get('Key')}: {first.get('Code')}"
                    )
                    raise StorageUnavailable(_FAILING, self._scrub(reason))
            if token is None:
                return

    def _list_page(self, below: str, token: str | None, size: int) -> tuple[_Names, str | None]:
        """Object names of one ListObjectsV2 page, and the token of the next
        page (None after the last)."""
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": below, "MaxKeys": size}
        if token is not None:
            arguments["ContinuationToken"] = token
        with self._errors("ListObjectsV2", below, _UNLISTED):
            answer = self._client.list_objects_v2(**arguments)
        names = [entry["Key"] for entry in answer.get("Contents", [])]
        following = answer.get("NextContinuationToken") if answer.get("IsTruncated") else None
        if answer.get("IsTruncated") and not following:
            raise StorageUnavailable(_UNLISTED, f"S3 ListObjectsV2 below {self.bucket}/{below}: no token")
        return names, following

    def _recover(self) -> int:
        with self._errors("HeadBucket"):
            self._client.head_bucket(Bucket=self.bucket)
        self._uploads.conditional()  # asked at start-up, where "on" unanswered stops it
        return self._abort_old_uploads()

    def _abort_old_uploads(self) -> int:
        removed = self._uploads.abort_begun_before(datetime.now(UTC) - self._abort_after)
        if removed:
            self.log.info(
                "Aborted {count} unfinished uploads in {bucket}/{prefix}",
                count=removed,
                bucket=self.bucket,
                prefix=self.prefix,
            )
        return removed

    def _wipe(self) -> None:
        self._uploads.abort_begun_before(datetime.now(UTC) + timedelta(days=1))
        self._delete_below(self._below_prefix)
