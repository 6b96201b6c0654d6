"""
Originals this process stored lately, so that the first request for each
of their renditions skips the database lookup that could only say "not
derived yet".

Right after an upload its first thumbnails are asked for, and each first
request looked the rendition up (one read transaction, 0.5-0.9 ms of a 2 MP
first size on the bench machine, a round trip more on a database across the
network) before claiming its derivation.  The claim's transaction checks
everything the lookup would have: it answers GONE if the original was
deleted or replaced meanwhile, DONE if another process derived the
rendition, and only then CLAIMED.  So a first request for a variant of an
upload stored here goes straight to the claim.  Not a crop's: it is made
for the focal point, which can change within a generation, and an answer
sent before its record would be made for the old one.

An entry is used only while the rendition cache's removal signals say its
Mark (taken before the upload's row existed) is current: a delete, a
replacement or a change of focal point anywhere voids it within the same
bound as the renditions held in memory.  Each variant goes this way once;
its later requests find its row remembered, or look it up as before.  A
claim that finds the original gone makes the caller forget the entry
(forget()); a request refused before its claim could answer (the image
queue full, the lease lapsed) looks the rendition up after all, since
another process may have derived it.

Bounded by count, least recently stored or used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pymager_tx.core.model import OriginalRecord

if TYPE_CHECKING:
    from pymager_tx.app.rendition_cache import Mark

# Variants asked for through one entry before it is let go: a page asks for
# a handful of sizes; a client walking through signed sizes gains nothing.
_MOST_VARIANTS = 32


@dataclass
class _Fresh:
    original: OriginalRecord
    mark: Mark
    asked: set[str] = field(default_factory=set)


class FreshUploads:
    def __init__(self, max_entries: int, mark: Callable[[], Mark], current: Callable[[Mark], bool]) -> None:
        """mark, current: the rendition cache's (RenditionCache.mark and
        .current); max_entries 0: none kept."""
        self.max_entries = max_entries
        self._mark = mark
        self._current = current
        self._entries: OrderedDict[str, _Fresh] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> Mark:
        """Take this before the upload's row is first written."""
        return self._mark()

    def stored(self, original: OriginalRecord, mark: Mark) -> None:
        """original, stored and ready, its first row written after mark."""
        if self.max_entries <= 0:
            return
        self._entries[original.image_id] = _Fresh(original, mark)
        self._entries.move_to_end(original.image_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def first_ask(self, image_id: str, variant: str) -> tuple[OriginalRecord, Mark] | None:
        """The original stored here under image_id and its Mark, if no
        removal signal has spoken since and variant is asked for the first
        time: then its rendition can only have been derived by another
        process, which the claim tells."""
        entry = self._entries.get(image_id)
        if entry is None:
            return None
        if not self._current(entry.mark) or len(entry.asked) >= _MOST_VARIANTS:
            del self._entries[image_id]
            return None
        if variant in entry.asked:
            return None
        entry.asked.add(variant)
        self._entries.move_to_end(image_id)
        return entry.original, entry.mark

    def forget(self, image_id: str) -> None:
        self._entries.pop(image_id, None)
