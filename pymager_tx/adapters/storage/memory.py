"""An in-memory blob store: the fake shipped beside the real one."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from pymager_tx.core.errors import BlobNotFound
from pymager_tx.core.keys import validate_key
from pymager_tx.ports import IBlobReader, IBlobStore, IKeyListing, IStoreUpkeep


@implementer(IBlobReader)
class BytesReader:
    """Bytes held in memory, read a part at a time."""

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._view = memoryview(data)
        self._offset = 0

    def read(self, size: int) -> Deferred[bytes]:
        part = bytes(self._view[self._offset : self._offset + size])
        self._offset += len(part)
        return succeed(part)

    def skip(self, count: int) -> Deferred[None]:
        self._offset = min(self.size, self._offset + max(0, count))
        return succeed(None)

    def close(self) -> Deferred[None]:
        self._view = memoryview(b"")
        return succeed(None)


@implementer(IBlobStore, IStoreUpkeep)
class MemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> Deferred[None]:
        self.blobs[validate_key(key)] = bytes(data)
        return succeed(None)

    def get(self, key: str) -> Deferred[bytes]:
        try:
            return succeed(self.blobs[validate_key(key)])
        except KeyError:
            return fail(BlobNotFound(key))

    def open(self, key: str) -> Deferred[IBlobReader]:
        try:
            return succeed(BytesReader(self.blobs[validate_key(key)]))
        except KeyError:
            return fail(BlobNotFound(key))

    def size(self, key: str) -> Deferred[int | None]:
        data = self.blobs.get(validate_key(key))
        return succeed(None if data is None else len(data))

    def delete(self, key: str) -> Deferred[None]:
        self.blobs.pop(validate_key(key), None)
        return succeed(None)

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        below = validate_key(prefix) + "/"
        for key in [key for key in self.blobs if key.startswith(below)]:
            del self.blobs[key]
        return succeed(None)

    def recover(self) -> Deferred[int]:
        return succeed(0)

    def sweep(self) -> Deferred[int]:
        return succeed(0)

    def wipe(self) -> Deferred[None]:
        self.blobs.clear()
        return succeed(None)

    def list(self, prefix: str) -> IKeyListing:
        below = validate_key(prefix) + "/"
        return _Listing([key for key in self.blobs if key.startswith(below)])


@implementer(IKeyListing)
class _Listing:
    def __init__(self, keys: list[str], page: int = 100) -> None:
        self._keys = keys
        self._page = page

    def next_page(self) -> Deferred[list[str]]:
        page, self._keys = self._keys[: self._page], self._keys[self._page :]
        return succeed(page)
