"""
Derived images kept in memory, so that a popular thumbnail costs neither a
database query nor a file read.

An entry may be served without asking the database while two things hold:
no removal has begun in any process on this machine since it was checked
(the shared Epoch), and it was checked less than recheck_seconds ago (which
bounds what processes on other machines, whose removals the epoch does not
see, can leave stale).  Past either, the next request asks the database,
and an entry whose row is unchanged is served again without reading the file.

Entries are evicted least recently used first, by total bytes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pymager_tx.epoch import Epoch, LocalEpoch
from pymager_tx.model import DerivedRecord

Key = tuple[str, str]  # image ID, variant


@dataclass(frozen=True)
class Mark:
    """When, and in which removal epoch, a database check began."""

    epoch: int
    at: float


@dataclass
class _Entry:
    record: DerivedRecord
    data: bytes
    checked: Mark


class RenditionCache:
    def __init__(
        self,
        max_bytes: int,
        max_item_bytes: int,
        recheck_seconds: float,
        epoch: Epoch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = min(max_item_bytes, max_bytes)
        self.recheck_seconds = recheck_seconds
        self.epoch = epoch or LocalEpoch()
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def mark(self) -> Mark:
        """Take this before the database check whose answer you will put():
        a removal that begins after it then voids the entry."""
        return Mark(self.epoch.read(), self._clock())

    def fresh(self, key: Key) -> tuple[DerivedRecord, bytes] | None:
        """The entry for key, if it may be served without a database check."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        checked = entry.checked
        if checked.epoch != self.epoch.read() or self._clock() - checked.at >= self.recheck_seconds:
            return None
        self._entries.move_to_end(key)
        return entry.record, entry.data

    def confirmed(self, key: Key, record: DerivedRecord, mark: Mark) -> bytes | None:
        """The bytes held for key, if they are those of record (as the
        database described it after mark); the entry counts as checked then."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.record != record:
            self._drop(key)
            return None
        entry.checked = mark
        self._entries.move_to_end(key)
        return entry.data

    def put(self, key: Key, record: DerivedRecord, data: bytes, mark: Mark) -> None:
        if self.max_bytes <= 0 or len(data) > self.max_item_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(record, data, mark)
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.data)
