"""
A removal epoch that every process sharing a data directory sees at once.

A process may serve a rendition from memory only while nothing that could
remove it has begun anywhere since it last checked the database.  Removals
are rare and reads are many, so each removal writes a new random value into
an 8-byte shared file mapping, and each read compares the value it saw when
it last checked with the current one: a memory read on the reactor thread,
no system call, no file I/O after the mapping is made.

A random value, not a counter: two processes bumping at once could both
write the same successor and one bump would be lost; two random values
collide once in 2**64.  A torn read only costs one extra database check.
"""

from __future__ import annotations

import mmap
import os
import secrets
import struct
from pathlib import Path

from zope.interface import implementer

from pymager_tx.ports import IEpoch, LocalEpoch

_FORMAT = struct.Struct("<Q")


@implementer(IEpoch)
class SharedEpoch:
    """The epoch in a file of the data directory, mapped into memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._fallback = LocalEpoch()

    @classmethod
    def of(cls, data_directory: Path) -> SharedEpoch:
        """The epoch of every process sharing data_directory."""
        return cls(data_directory / "processes" / "removals.epoch")

    def open(self) -> None:
        """Map the file, making it if it is not there.  Blocks: call it from
        a thread pool, once, before serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(descriptor).st_size < _FORMAT.size:
                # Growing never shortens what another process wrote.
                os.ftruncate(descriptor, _FORMAT.size)
            self._map = mmap.mmap(descriptor, _FORMAT.size, mmap.MAP_SHARED)
        finally:
            os.close(descriptor)  # the mapping keeps the file

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def read(self) -> int:
        if self._map is None:
            return self._fallback.read()
        value: int = _FORMAT.unpack_from(self._map, 0)[0]
        return value

    def bump(self) -> None:
        # Before open() (start-up recovery), nobody has cached anything yet.
        self._fallback.bump()
        if self._map is not None:
            _FORMAT.pack_into(self._map, 0, secrets.randbits(64))
