"""
Writing a bucket: an object put whole (PutObject) or in parts (a multipart
upload, completed only once every part is stored and aborted if anything
fails), and the abort of the unfinished uploads a crashed writer left.

An image's object is written once (If-None-Match: * on the PutObject or
the CompleteMultipartUpload) where the store honours it: a write that finds
an object there is refused with 412, and never replaces it.  botocore tries
a request again when its answer is lost, and the retry of a write that had
landed meets its own object: so each such write carries an ID in its
metadata, and a 412 over an object with the same ID is the write done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import uuid4

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from pymager_tx.adapters.storage.s3_client import read_fully
from pymager_tx.core.errors import BlobExists, StorageUnavailable

if TYPE_CHECKING:
    from pymager_tx.adapters.storage.s3 import S3BlobStore

_Parts = list[dict[str, Any]]
ConditionalWrites = Literal["auto", "on", "off"]
# What a store that refuses If-None-Match answers (it does not implement it).
_REFUSED = frozenset({400, 501})
_FAILING = "the image storage is failing; try again later"
# The object metadata naming the write that stored it (x-amz-meta-pymager-write).
WRITE_ID = "pymager-write"


def _metadata(write: str | None) -> dict[str, Any]:
    return {} if write is None else {"Metadata": {WRITE_ID: write}}


def precondition_failed(error: ClientError) -> bool:
    """Whether the store refused a conditional write over an existing
    object: 412, or 304 from MinIO releases that read If-None-Match on a
    PUT as on a GET.  (AWS's 409 ConditionalRequestConflict, two conditional
    writes of one key at once, is a failure to try again: 503.)"""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.response.get("Error", {}).get("Code")) == "PreconditionFailed" or status in (304, 412)


class Uploads:
    """The store's writes, run in a pool thread like its other calls: its
    client, bucket, error translation and log are the store's."""

    def __init__(self, store: S3BlobStore, part_bytes: int, conditional_writes: ConditionalWrites) -> None:
        self._store = store
        self._part_bytes = part_bytes
        self._mode = conditional_writes
        # Whether the store honours If-None-Match: * (None: not asked yet).
        self._honours: bool | None = None
        self._asking = threading.Lock()

    def conditional(self) -> bool:
        """Whether writes of images go with If-None-Match: *; the store is
        asked once, by the first caller (the others wait for its answer)."""
        if self._mode == "off":
            return False
        store = self._store
        with self._asking:
            if self._honours is None:
                honours = self._ask()
                if not honours and self._mode == "on":
                    raise StorageUnavailable(
                        _FAILING,
                        f"S3 at {store._endpoint}: {store.bucket} does not honour If-None-Match: * "
                        '([storage.s3] conditional_writes = "on")',
                    )
                if honours:
                    store.log.info(
                        "{bucket} at {endpoint} honours conditional writes: no image object is ever replaced",
                        bucket=store.bucket,
                        endpoint=store._endpoint,
                    )
                else:
                    store.log.warn(
                        "{bucket} at {endpoint} does not honour If-None-Match: *: image objects are "
                        "written without it (each key is still one writer's)",
                        bucket=store.bucket,
                        endpoint=store._endpoint,
                    )
                self._honours = honours
            return self._honours

    def _ask(self) -> bool:
        """Write a probe object of our own twice with If-None-Match: *: a
        store that honours it refuses the second with 412; one that ignores
        it replaces the object; one that does not implement it refuses the
        header (400, 501).  The probe is removed either way."""
        store = self._store
        name = store._object(f"probes/conditional-{uuid4().hex}")
        with store._errors("PutObject", name):
            try:
                for _ in range(2):
                    store._client.put_object(Bucket=store.bucket, Key=name, Body=b"", IfNoneMatch="*")
                honours = False  # the second replaced the first
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if precondition_failed(error):
                    honours = True
                elif status in _REFUSED:
                    honours = False
                else:
                    raise
        store._delete(name)
        return honours

    def put(self, name: str, data: bytes, once: bool = False) -> None:
        """Store data under name; once: only if no object is there."""
        store = self._store
        write = uuid4().hex if once else None
        if len(data) <= self._part_bytes:
            with store._errors("PutObject", name):
                self._if_absent(
                    "PutObject",
                    name,
                    write,
                    lambda conditions: store._client.put_object(
                        Bucket=store.bucket, Key=name, Body=data, **_metadata(write), **conditions
                    ),
                )
            return
        view = memoryview(data)
        parts = (bytes(view[at : at + self._part_bytes]) for at in range(0, len(data), self._part_bytes))
        self._put_parts(name, parts, write)

    def put_stream(self, name: str, read: Callable[[int], bytes], once: bool = False) -> None:
        first = read_fully(read, self._part_bytes)
        second = read_fully(read, self._part_bytes) if len(first) == self._part_bytes else b""
        if not second:
            self.put(name, first, once)
            return

        def rest() -> Iterator[bytes]:
            yield first
            yield second
            while part := read_fully(read, self._part_bytes):
                yield part

        self._put_parts(name, rest(), uuid4().hex if once else None)

    def _put_parts(self, name: str, parts: Iterator[bytes], write: str | None) -> None:
        """A multipart upload of parts, completed only once every part is
        stored, aborted if anything fails: the object is all or nothing."""
        store = self._store
        with store._errors("CreateMultipartUpload", name):
            answer = store._client.create_multipart_upload(Bucket=store.bucket, Key=name, **_metadata(write))
            upload_id = answer["UploadId"]
        try:
            done: _Parts = []
            for number, part in enumerate(parts, start=1):
                with store._errors("UploadPart", name):
                    answer = store._client.upload_part(
                        Bucket=store.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part
                    )
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            with store._errors("CompleteMultipartUpload", name):
                self._if_absent(
                    "CompleteMultipartUpload",
                    name,
                    write,
                    lambda conditions: store._client.complete_multipart_upload(
                        Bucket=store.bucket,
                        Key=name,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": done},
                        **conditions,
                    ),
                )
        except BaseException:
            self._abort(name, upload_id)
            raise

    def _if_absent(
        self, operation: str, name: str, write: str | None, send: Callable[[dict[str, Any]], object]
    ) -> None:
        """send(conditions), those of a write made once when write names one
        (its ID, in the object's metadata); a refusal over another write's
        object is BlobExists."""
        if write is None:
            send({})
            return
        try:
            send({"IfNoneMatch": "*"})
        except ClientError as error:
            if not precondition_failed(error):
                raise
            if self._written_by(name) == write:
                return  # this very write landed, and its answer was lost
            store = self._store
            raise BlobExists(
                store._key(name) or name,
                store._scrub(
                    f"S3 {operation} of {store.bucket}/{name} at {store._endpoint}: another write's "
                    "object is there, never replaced (412 PreconditionFailed)"
                ),
            ) from None

    def _written_by(self, name: str) -> str | None:
        """The write ID of the object under name; None if it has none (or
        is gone)."""
        store = self._store
        try:
            answer = store._client.head_object(Bucket=store.bucket, Key=name)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        written: str | None = answer.get("Metadata", {}).get(WRITE_ID)
        return written

    def _abort(self, name: str, upload_id: str) -> bool:
        store = self._store
        try:
            with store._errors("AbortMultipartUpload", name):
                store._client.abort_multipart_upload(Bucket=store.bucket, Key=name, UploadId=upload_id)
        except StorageUnavailable as error:
            # recover() aborts it later, once it is old enough.
            store.log.warn("Could not abort an upload: {reason}", reason=error.reason)
            return False
        return True

    def abort_begun_before(self, begun_before: datetime) -> int:
        """Abort the multipart uploads below the prefix begun before then.
        The first abort that fails ends the sweep (the rest wait for the
        next one): each failure costs the full retry budget of one call, and
        a bucket that stalls would otherwise hold start-up that long for
        every upload left."""
        store = self._store
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            with store._errors("ListMultipartUploads", store._below_prefix):
                answer = store._client.list_multipart_uploads(
                    Bucket=store.bucket, Prefix=store._below_prefix, **markers
                )
            for upload in answer.get("Uploads", []):
                if upload["Initiated"] >= begun_before:
                    continue
                if not self._abort(upload["Key"], upload["UploadId"]):
                    return aborted
                aborted += 1
            if not answer.get("IsTruncated"):
                return aborted
            markers = {
                "KeyMarker": answer.get("NextKeyMarker", ""),
                "UploadIdMarker": answer.get("NextUploadIdMarker", ""),
            }
