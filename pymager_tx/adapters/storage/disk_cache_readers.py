"""
The readers the disk cache (pymager_tx.adapters.storage.disk_cache) hands
out: a local copy's, and the bucket's with a copy kept as it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from twisted.internet.defer import Deferred
from zope.interface import implementer

from pymager_tx.adapters.storage.disk_cache_files import Copy
from pymager_tx.ports import IBlobReader, Offload


@implementer(IBlobReader)
class CopyReader:
    """A local copy, read a part at a time on the io threads."""

    def __init__(self, file: BinaryIO, size: int, io: Offload) -> None:
        self.size = size
        self._file = file
        self._io = io

    def read(self, size: int) -> Deferred[bytes]:
        return self._io(self._file.read, size)

    def skip(self, count: int) -> Deferred[None]:
        return self._io(self._skip, count)

    def _skip(self, count: int) -> None:
        self._file.seek(min(self.size, self._file.tell() + max(0, count)))

    def close(self) -> Deferred[None]:
        return self._io(self._file.close)


@implementer(IBlobReader)
class FillingReader:
    """The bucket's reader of a key, writing what it reads to copy (on the
    io threads, each part before it is handed on): whole(copy) once every
    byte was read in order, to put it in place; else the copy is thrown away
    and abandoned(reason) told (reason None: the reader skipped or closed
    early, which is no failure)."""

    def __init__(
        self,
        reader: IBlobReader,
        copy: Copy,
        io: Offload,
        whole: Callable[[Copy], None],
        abandoned: Callable[[str | None], None],
    ) -> None:
        self.size = reader.size
        self._reader = reader
        self._copy: Copy | None = copy
        self._io = io
        self._whole = whole
        self._abandoned = abandoned

    def read(self, size: int) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self._read(size))

    async def _read(self, size: int) -> bytes:
        part = await self._reader.read(size)
        copy = self._copy
        if copy is not None:
            try:
                if part:
                    await self._io(copy.write, part)
            except OSError as error:
                self._abandon(f"{type(error).__name__}: {error}")
            else:
                if copy.written >= self.size or not part:
                    self._finish(copy)
        return part

    def skip(self, count: int) -> Deferred[None]:
        if count > 0:
            self._abandon(None)
        return self._reader.skip(count)

    def close(self) -> Deferred[None]:
        self._abandon(None)
        return self._reader.close()

    def _finish(self, copy: Copy) -> None:
        if copy.written != self.size:
            self._abandon(f"{copy.written} bytes read of {self.size}")
            return
        self._copy = None
        self._whole(copy)

    def _abandon(self, reason: str | None) -> None:
        copy, self._copy = self._copy, None
        if copy is None:
            return
        self._abandoned(reason)
        self._io(copy.abandon).addErrback(lambda _: None)
