"""
A bounded local disk cache in front of a blob store (the bucket), so that a
warm read of an original or a rendition costs a local file read, not a GET.

Reads of originals/ and derived/ keys are served from a copy on this node's
disk when there is one; a miss reads the bucket and keeps a copy: a whole
read (get) at once, a streamed one (open) as the client takes its parts,
kept only once every byte was read (a range, a skip or a close before the
end leaves no copy).  Writes, sizes (existence checks must see the bucket)
and listings go to the bucket.  Copies are written on the io threads, to a
temporary file renamed into place (disk_cache_files), never blocking the
reactor and never keeping a part of an object under its key.

Why a copy is never stale: a key names one object for good.  Every key
holds its upload's generation (and a rendition's, its claim's token), both
new random values, so no key is ever written twice with other bytes
(pymager_tx.core.keys): an original replaced, or deleted and uploaded
again, has new keys.  And a key is read only after a row named it: the
database's answer, or a row remembered under the removal signals
(pymager_tx.app.rendition_cache, record_cache), which a deletion anywhere
voids (NOTIFY, the epoch, the counter poll).  So once the signal reached
this node, nothing asks for a deleted image's keys, and its copies here are
never served again: the removal signal voids them through the rows, as it
voids the memory cache.  A delete through this process also removes its
copies before the bucket's objects; copies of images deleted elsewhere stay
until evicted, unread.

Bounds, all by construction: max_bytes and max_files of copies (least
recently used evicted first), max_item_bytes per copy, and at most
max_fills copies being written at once (past it, a miss is served without
keeping a copy).  The index, in memory, holds one small entry per copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymager_tx.adapters.storage.cached_read import READ_HERE_BYTES, CachedReader
from pymager_tx.adapters.storage.disk_cache_files import Copy, Found, Slot, fits
from pymager_tx.adapters.storage.disk_cache_index import CacheBounds, Entry, Fill, Index
from pymager_tx.adapters.storage.disk_cache_readers import CopyReader, FillingReader
from pymager_tx.core.keys import validate_key
from pymager_tx.ports import (
    NO_METRICS,
    IBlobReader,
    IBlobStore,
    IKeyListing,
    IStoreUpkeep,
    Metrics,
    Offload,
)

# Only images are kept: the readiness probe, say, must reach the bucket.
_KEPT = ("originals/", "derived/")
# Lists the store's methods name (its list method hides the builtin).
_Founds = list[Found]
_Keys = list[str]


@implementer(IBlobStore, IStoreUpkeep)
class DiskCachedBlobStore:
    log = Logger()

    def __init__(
        self,
        bucket: IBlobStore,
        directory: Path,
        io: Offload,
        bounds: CacheBounds,
        metrics: Metrics = NO_METRICS,
        close_bucket: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        """directory: the node's cache (<data>/cache), where this process
        takes a slot of its own when recover() runs; until then, and if it
        cannot, every call goes to bucket."""
        self.bucket = bucket
        self.bounds = bounds
        self._slot = Slot(directory)
        self._io = io
        self._cached = CachedReader()
        self._metrics = metrics
        self._close_bucket = close_bucket
        self._index = Index()
        # Copies being written, one per key at most.
        self._fills: dict[str, Fill] = {}
        # Keys whose copies are being removed: no copy of them is begun
        # meanwhile, so that a removal never takes a newer copy with it.
        self._removing: dict[str, int] = {}
        self._open = False
        self._failing = False  # said so in the log

    @property
    def size_bytes(self) -> int:
        return self._index.bytes

    def __len__(self) -> int:
        return len(self._index.entries)

    def __contains__(self, key: object) -> bool:
        return key in self._index.entries

    def __repr__(self) -> str:
        return (
            f"<DiskCachedBlobStore in {self._slot.directory or self._slot.root} in front of {self.bucket!r}>"
        )

    # IBlobStore

    def put(self, key: str, data: bytes) -> Deferred[None]:
        validate_key(key)
        return Deferred.fromCoroutine(self._voided_then(key, lambda: self.bucket.put(key, data)))

    def get(self, key: str) -> Deferred[bytes]:
        validate_key(key)
        if not self._kept(key):
            return self.bucket.get(key)
        return Deferred.fromCoroutine(self._get(key))

    def open(self, key: str) -> Deferred[IBlobReader]:
        validate_key(key)
        if not self._kept(key):
            return self.bucket.open(key)
        return Deferred.fromCoroutine(self._open_reader(key))

    def size(self, key: str) -> Deferred[int | None]:
        return self.bucket.size(key)

    def delete(self, key: str) -> Deferred[None]:
        validate_key(key)
        return Deferred.fromCoroutine(self._voided_then(key, lambda: self.bucket.delete(key)))

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        validate_key(prefix)
        return Deferred.fromCoroutine(self._delete_prefix(prefix))

    def list(self, prefix: str) -> IKeyListing:
        return self.bucket.list(prefix)

    # IStoreUpkeep

    def recover(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self._recover())

    def sweep(self) -> Deferred[int]:
        """The bucket's sweep: copies are this process's own, never a dead one's."""
        upkeep = IStoreUpkeep(self.bucket, None)
        return succeed(0) if upkeep is None else upkeep.sweep()

    def wipe(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._wipe())

    def close(self) -> Deferred[None]:
        """Let go of the slot (for the next process) and of the bucket."""
        return Deferred.fromCoroutine(self._close())

    # On the reactor thread.

    def _kept(self, key: str) -> bool:
        return self._open and key.startswith(_KEPT) and fits(key)

    async def _get(self, key: str) -> bytes:
        entry = self._index.entries.get(key)
        if entry is not None:
            self._index.entries.move_to_end(key)
            copy = self._read_here(key, entry.size)
            if copy is None:
                try:
                    copy = await self._io(self._slot.read, key)
                except OSError as error:
                    self._lost(key, entry, error)
            if copy is not None:
                self._metrics.disk_cache(True)
                return copy
        self._metrics.disk_cache(False)
        data: bytes = await self.bucket.get(key)
        if self._may_fill(key, len(data)):
            fill = self._fills[key] = Fill()
            writing = self._io(self._slot.store, key, data)
            writing.addCallbacks(
                lambda _: self._filled(key, fill, len(data)), self._fill_failed, errbackArgs=(key, fill)
            )
        return data

    async def _open_reader(self, key: str) -> IBlobReader:
        entry = self._index.entries.get(key)
        if entry is not None:
            self._index.entries.move_to_end(key)
            try:
                file, size = await self._io(self._slot.open, key)
            except OSError as error:
                self._lost(key, entry, error)
            else:
                self._metrics.disk_cache(True)
                return CopyReader(file, size, self._io)
        self._metrics.disk_cache(False)
        reader = await self.bucket.open(key)
        if not self._may_fill(key, reader.size):
            return reader
        fill = self._fills[key] = Fill()
        size = reader.size
        return FillingReader(
            reader,
            self._slot.begin(),
            self._io,
            whole=lambda copy: self._commit(key, fill, copy, size),
            abandoned=lambda reason: self._abandoned(key, fill, reason),
        )

    def _read_here(self, key: str, size: int) -> bytes | None:
        """A small copy the kernel holds in memory, read without a thread (cached_read)."""
        if size > READ_HERE_BYTES:
            return None
        return self._cached.read(str(self._slot.path(key)), READ_HERE_BYTES)

    def _may_fill(self, key: str, size: int) -> bool:
        bounds = self.bounds
        return (
            self._open
            and size <= bounds.max_item_bytes
            and size <= bounds.max_bytes
            and key not in self._fills
            and key not in self._removing
            and key not in self._index.entries
            and len(self._fills) < bounds.max_fills
        )

    def _commit(self, key: str, fill: Fill, copy: Copy, size: int) -> None:
        """Put a streamed copy in place, in an io thread."""
        committing = self._io(copy.commit, key)
        committing.addCallbacks(
            lambda _: self._filled(key, fill, size), self._fill_failed, errbackArgs=(key, fill)
        )

    def _abandoned(self, key: str, fill: Fill, reason: str | None) -> None:
        self._unfill(key, fill)
        if reason is not None:
            self._cannot_keep(key, reason)

    def _filled(self, key: str, fill: Fill, size: int) -> None:
        """A copy of key is in place: indexed if nothing voided it meanwhile."""
        if not self._unfill(key, fill):
            return  # closed meanwhile: the copy is whole, the slot's next process's
        if fill.voided:
            # Deleted (or the store wiped) while its copy was written: it goes too.
            self._remove_later([key])
            return
        self._index.add(key, Entry(size))
        self._evict()
        if self._failing:
            self._failing = False
            self.log.info("Keeping copies on local disk again")

    def _unfill(self, key: str, fill: Fill) -> bool:
        """The copy fill of key is done with; False if the store was closed
        meanwhile."""
        if self._fills.get(key) is not fill:
            return False
        del self._fills[key]
        return True

    def _fill_failed(self, failure: Failure, key: str, fill: Fill) -> None:
        self._unfill(key, fill)
        self._cannot_keep(key, failure.getErrorMessage())

    def _cannot_keep(self, key: str, reason: str) -> None:
        """Said once until a copy is kept again: a full disk fails every copy."""
        if not self._failing:
            self._failing = True
            self.log.warn(
                "Could not keep a copy of {key} on local disk (served from the bucket): {reason}",
                key=key,
                reason=reason,
            )

    def _void(self, keys: _Keys) -> _Keys:
        """Forget the copies of keys, and void those being written; the
        keys whose copies must be removed."""
        for key in keys:
            fill = self._fills.get(key)
            if fill is not None:
                fill.voided = True
        return [key for key in keys if self._index.drop(key) is not None]

    def _lost(self, key: str, entry: Entry, error: OSError) -> None:
        """The copy of key could not be read (removed by hand, a disk
        fault): forgotten, and the bucket read instead (a new copy then
        replaces the file whole)."""
        if self._index.entries.get(key) is entry:
            self._index.drop(key)
        self.log.warn("Could not read the local copy of {key}: {reason}", key=key, reason=str(error))

    def _evict(self) -> None:
        bounds, index = self.bounds, self._index
        evicted = []
        while index.entries and (index.bytes > bounds.max_bytes or len(index.entries) > bounds.max_files):
            oldest = next(iter(index.entries))
            index.drop(oldest)
            evicted.append(oldest)
        if evicted:
            self._remove_later(evicted)

    def _remove(self, keys: _Keys) -> Deferred[None]:
        """Remove the copies of keys, in one trip to an io thread; no copy
        of them is begun until it is done."""
        for key in keys:
            self._removing[key] = self._removing.get(key, 0) + 1

        def done(result: object) -> object:
            for key in keys:
                left = self._removing.pop(key) - 1
                if left:
                    self._removing[key] = left
            return result

        removing = self._io(_remove_all, self._slot, keys)
        removing.addBoth(done)
        return removing

    def _remove_later(self, keys: _Keys) -> None:
        self._remove(keys).addErrback(
            lambda failure: self.log.warn(
                "Could not remove the local copies of {keys}: {reason}",
                keys=keys,
                reason=failure.getErrorMessage(),
            )
        )

    async def _voided_then(self, key: str, then: Callable[[], Deferred[None]]) -> None:
        """Forget key's copy (removed before the bucket's object), then do then."""
        removed = self._void([key])
        if removed:
            await self._remove(removed)
        await then()

    async def _delete_prefix(self, prefix: str) -> None:
        below = prefix + "/"
        removed = self._void(
            [key for key in self._fills if key.startswith(below)] + self._index.under(prefix)
        )
        if removed:
            await self._remove(removed)
        await self.bucket.delete_prefix(prefix)

    async def _recover(self) -> int:
        try:
            found = await self._io(self._take_slot)
        except OSError as error:
            self.log.warn(
                "No local disk cache: {directory} is not usable ({reason})",
                directory=str(self._slot.root),
                reason=str(error),
            )
        else:
            self._adopt(found)
        upkeep = IStoreUpkeep(self.bucket, None)
        return 0 if upkeep is None else int(await upkeep.recover())

    def _take_slot(self) -> _Founds | None:
        """Take a slot and count its copies again, the newest kept within
        the bounds and the rest removed here, in the io thread (the bounds
        may have been lowered since they were stored)."""
        if not self._slot.take():
            return None
        bounds = self.bounds
        kept: _Founds = []
        total = 0
        for each in reversed(self._slot.recount()):
            if (
                each.size <= bounds.max_item_bytes
                and total + each.size <= bounds.max_bytes
                and len(kept) < bounds.max_files
            ):
                kept.append(each)
                total += each.size
            else:
                self._slot.remove(each.key)
        kept.reverse()
        return kept

    def _adopt(self, found: _Founds | None) -> None:
        if found is None:
            self.log.warn(
                "No local disk cache: every slot of {directory} is held by a live process",
                directory=str(self._slot.root),
            )
            return
        for each in found:
            self._index.add(each.key, Entry(each.size))
        self._open = True
        self.log.info(
            "Local disk cache in {directory}: {count} copies, {size} bytes",
            directory=str(self._slot.directory),
            count=len(self._index.entries),
            size=self._index.bytes,
        )

    async def _wipe(self) -> None:
        self._void(list(self._fills))
        self._index = Index()
        await self._io(self._slot.clear)
        upkeep = IStoreUpkeep(self.bucket, None)
        if upkeep is not None:
            await upkeep.wipe()

    async def _close(self) -> None:
        self._open = False
        self._fills.clear()
        await self._io(self._slot.release)
        if self._close_bucket is not None:
            await self._close_bucket()


def _remove_all(slot: Slot, keys: list[str]) -> None:
    for key in keys:
        slot.remove(key)
