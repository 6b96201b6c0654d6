"""
The rows of derived images read last, so that a warm request for a rendition
not held in memory costs a file read, not a database query as well.

Each record is kept with the Mark taken before the database check that
found it, and is served only while the rendition cache's removal signals
say that Mark is current: the same rule, and so the same bound, as the
derived images held in memory (pymager_tx.app.rendition_cache).  A delete
through this process voids every record before it answers; one through
another process on this machine at once; one on another machine within the
poll bound.

Records are small and many renditions are warm at once, so they are bounded
by count, not bytes, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from pymager_tx.core.model import DerivedRecord

if TYPE_CHECKING:
    from pymager_tx.app.rendition_cache import Mark

Key = tuple[str, str]  # image ID, variant


class RecordCache:
    def __init__(self, max_records: int, current: Callable[[Mark], bool]) -> None:
        """current: whether a Mark taken before a database check still
        holds (RenditionCache.current)."""
        self.max_records = max_records
        self._current = current
        self._entries: OrderedDict[Key, tuple[DerivedRecord, Mark]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: Key) -> tuple[DerivedRecord, Mark] | None:
        """The record for key and the Mark it was checked at, if it may be
        served without asking the database again."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not self._current(entry[1]):
            # Checked again (and put back) by the caller's database lookup.
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, record: DerivedRecord, mark: Mark) -> None:
        """record, as the database described it after mark was taken."""
        if self.max_records <= 0:
            return
        self._entries[key] = (record, mark)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_records:
            self._entries.popitem(last=False)

    def drop(self, key: Key) -> None:
        self._entries.pop(key, None)
