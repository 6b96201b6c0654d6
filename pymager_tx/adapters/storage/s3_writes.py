"""
Writing a bucket: an object put whole (PutObject) or in parts (a multipart
upload, completed only once every part is stored and aborted if anything
fails), and the abort of the unfinished uploads a crashed writer left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymager_tx.adapters.storage.s3_client import read_fully
from pymager_tx.core.errors import StorageUnavailable

if TYPE_CHECKING:
    from pymager_tx.adapters.storage.s3 import S3BlobStore

_Parts = list[dict[str, Any]]


class Uploads:
    """The store's writes, run in a pool thread like its other calls: its
    client, bucket, error translation and log are the store's."""

    def __init__(self, store: S3BlobStore, part_bytes: int) -> None:
        self._store = store
        self._part_bytes = part_bytes

    def put(self, name: str, data: bytes) -> None:
        store = self._store
        if len(data) <= self._part_bytes:
            with store._errors("PutObject", name):
                store._client.put_object(Bucket=store.bucket, Key=name, Body=data)
            return
        view = memoryview(data)
        parts = (bytes(view[at : at + self._part_bytes]) for at in range(0, len(data), self._part_bytes))
        self._put_parts(name, parts)

    def put_stream(self, name: str, read: Callable[[int], bytes]) -> None:
        first = read_fully(read, self._part_bytes)
        second = read_fully(read, self._part_bytes) if len(first) == self._part_bytes else b""
        if not second:
            self.put(name, first)
            return

        def rest() -> Iterator[bytes]:
            yield first
            yield second
            while part := read_fully(read, self._part_bytes):
                yield part

        self._put_parts(name, rest())

    def _put_parts(self, name: str, parts: Iterator[bytes]) -> None:
        """A multipart upload of parts, completed only once every part is
        stored, aborted if anything fails: the object is all or nothing."""
        store = self._store
        with store._errors("CreateMultipartUpload", name):
            upload_id = store._client.create_multipart_upload(Bucket=store.bucket, Key=name)["UploadId"]
        try:
            done: _Parts = []
            for number, part in enumerate(parts, start=1):
                with store._errors("UploadPart", name):
                    answer = store._client.upload_part(
                        Bucket=store.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part
                    )
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            with store._errors("CompleteMultipartUpload", name):
                store._client.complete_multipart_upload(
                    Bucket=store.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": done}
                )
        except BaseException:
            self._abort(name, upload_id)
            raise

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
