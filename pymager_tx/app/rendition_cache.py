"""
Derived images kept in memory, so that a popular thumbnail costs neither a
database query nor a file read.

An entry may be served without asking the database while no deletion has
begun anywhere since its row was last checked.  Two signals tell:

- the shared removal epoch, which deletions by any process on this machine
  change at once (a memory read per request);
- the database's removal counter, which every deletion increments and which
  each process polls (one small query every poll_seconds, however many
  images it holds), for deletions made on other machines.

An entry is served only while both are what they were when its row was
checked, and while the poll is current: if polling stops (the database is
away), entries stop being served once the last answer is two polls old, so
a deletion anywhere is seen within two poll intervals whatever happens.  An entry that
may be stale is checked again on its next request; a check that finds the
same row serves the held bytes again without reading the file.

Entries are evicted least recently used first, by total bytes.

The rows of renditions whose bytes are not held (too many, or the cache
off) are kept apart, by count, under the same rule (records: a
pymager_tx.app.record_cache.RecordCache), and so are the rows of originals
this process stored lately (uploads: pymager_tx.app.fresh_uploads).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pymager_tx.app.fresh_uploads import FreshUploads
from pymager_tx.app.record_cache import RecordCache
from pymager_tx.core.model import DerivedRecord
from pymager_tx.ports import NO_METRICS, IEpoch, LocalEpoch, Metrics

Key = tuple[str, str]  # image ID, variant
# Entries stop being served once the last poll's answer is this many poll
# intervals old: one interval is the normal age of an answer, the second
# allows for a slow poll, and together they bound how long a deletion made
# on another machine can go unseen.
_POLLS_OF_AGE = 2

# Originals stored lately whose first renditions skip their lookup
# (pymager_tx.app.fresh_uploads): about a kilobyte each.
_FRESH_UPLOADS = 1024


@dataclass(frozen=True)
class Mark:
    """What the deletion signals said when a database check began."""

    epoch: int
    removals: int | None


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
        poll_seconds: float,
        epoch: IEpoch | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
        max_records: int = 0,
    ) -> None:
        """poll_seconds: how often heard_removals() is called; 0: never,
        and every request checks the database; metrics: told of each
        lookup, a hit when it is served without a database check;
        max_records: rows of renditions kept (records), bytes or not; also
        bounds the originals stored lately (uploads)."""
        self.max_bytes = max_bytes
        self.max_item_bytes = min(max_item_bytes, max_bytes)
        self.poll_seconds = poll_seconds
        self.epoch = epoch or LocalEpoch()
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._removals: int | None = None
        self._heard_at = 0.0
        self._metrics = metrics
        self.records = RecordCache(max_records, self.current)
        # Rows too, of originals: as many as records, within a smaller bound.
        self.uploads = FreshUploads(min(max_records, _FRESH_UPLOADS), self.mark, self.current)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def heard_removals(self, count: int) -> None:
        """The database's removal counter, as just read."""
        self._removals = count
        self._heard_at = self._clock()

    def mark(self) -> Mark:
        """Take this before the database check whose answer you will put():
        a deletion that begins after it then voids the entry."""
        return Mark(self.epoch.read(), self._removals)

    def fresh(self, key: Key) -> tuple[DerivedRecord, bytes] | None:
        """The entry for key, if it may be served without a database check."""
        entry = self._entries.get(key)
        if entry is None or not self.current(entry.checked):
            self._metrics.rendition_cache(False)
            return None
        self._entries.move_to_end(key)
        self._metrics.rendition_cache(True)
        return entry.record, entry.data

    def current(self, checked: Mark) -> bool:
        """Whether no deletion can have begun anywhere since checked was
        taken (within the poll bound for other machines)."""
        if self.poll_seconds <= 0 or checked.removals is None:
            return False
        if self._clock() - self._heard_at >= _POLLS_OF_AGE * self.poll_seconds:
            return False
        return checked.removals == self._removals and checked.epoch == self.epoch.read()

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
