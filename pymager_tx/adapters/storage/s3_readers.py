"""
Reading a bucket: an object's body a part at a time, and a listing a page at
a time, both on the store's pool.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from pymager_tx.adapters.storage.s3_client import read_fully
from pymager_tx.core.errors import BlobNotFound, StorageUnavailable
from pymager_tx.ports import IBlobReader, IKeyListing

if TYPE_CHECKING:
    from pymager_tx.adapters.storage.s3 import S3BlobStore

_FAILING = "the image storage is failing; try again later"
_SKIP_PART = 128 * 1024


@implementer(IBlobReader)
class ObjectReader:
    """An object's body, read a part at a time as it streams in.

    The body is one GET's answer, so the reader sees the object as it was
    when opened.  If the stream breaks (a connection dropped while a slow
    client took its time), reading resumes once from where it stopped, with a
    ranged GET of the same version (If-Match its ETag): either the same bytes
    or a failure, never another object's.

    An open reader holds a connection until closed; botocore then opens
    another for other calls rather than wait (its pool never blocks), so
    slow clients never starve the store's other calls of connections."""

    def __init__(self, store: S3BlobStore, name: str, answer: dict[str, Any]) -> None:
        self.size = int(answer["ContentLength"])
        self._store = store
        self._name = name
        self._etag = answer.get("ETag")
        self._body: Any = answer["Body"]
        self._offset = 0
        self._resumed = False

    def read(self, size: int) -> Deferred[bytes]:
        return self._store._offload(self._read, size)

    def skip(self, count: int) -> Deferred[None]:
        return self._store._offload(self._skip, count)

    def close(self) -> Deferred[None]:
        return self._store._offload(self._close)

    def _read(self, size: int) -> bytes:
        if self._body is None or self._offset >= self.size:
            return b""
        want = min(size, self.size - self._offset)
        try:
            with self._store._errors("GetObject", self._name):
                part = read_fully(self._body.read, want)
        except StorageUnavailable:
            if self._resumed or self._etag is None:
                raise
            self._resumed = True
            self._resume()
            with self._store._errors("GetObject", self._name):
                part = read_fully(self._body.read, want)
        self._offset += len(part)
        return part

    def _skip(self, count: int) -> None:
        target = min(self.size, self._offset + max(0, count))
        if self._body is None or target == self._offset:
            return
        if self._etag is None:
            # No version to ask a range of: read past the bytes, a part at a time.
            while self._offset < target and self._read(min(_SKIP_PART, target - self._offset)):
                pass
            return
        self._offset = target
        if target < self.size:
            # One ranged GET of the same version instead of reading past them.
            self._reopen()

    def _resume(self) -> None:
        store = self._store
        store.log.info(
            "Resuming a read of {bucket}/{key} at byte {offset}",
            bucket=store.bucket,
            key=self._name,
            offset=self._offset,
        )
        self._reopen()

    def _reopen(self) -> None:
        """The body again from the offset, of the version first opened."""
        with suppress(Exception):
            self._body.close()
        store = self._store
        try:
            with store._errors("GetObject", self._name):
                answer = store._client.get_object(
                    Bucket=store.bucket,
                    Key=self._name,
                    Range=f"bytes={self._offset}-",
                    IfMatch=self._etag,
                )
        except BlobNotFound:
            raise StorageUnavailable(_FAILING, f"{self._name} was deleted while it was read") from None
        self._body = answer["Body"]

    def _close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with suppress(Exception):
                body.close()


@implementer(IKeyListing)
class Listing:
    """ListObjectsV2 below a prefix, a page at a time, on the store's pool."""

    def __init__(self, store: S3BlobStore, below: str) -> None:
        self._store = store
        self._below = below
        self._token: str | None = None
        self._done = False

    def next_page(self) -> Deferred[list[str]]:
        return self._store._offload(self._next_page)

    def _next_page(self) -> list[str]:
        # A page of objects that are not keys (foreign objects, directory
        # markers) must not pass for the end: read on to one with keys.
        while not self._done:
            names, self._token = self._store._list_page(self._below, self._token, self._store._page_size)
            self._done = self._token is None
            keys = [key for key in map(self._store._key, names) if key is not None]
            if keys:
                return keys
        return []
