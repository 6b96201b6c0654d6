"""
What a process's disk cache (pymager_tx.adapters.storage.disk_cache) knows
of its copies, in memory: their keys and sizes, least recently used first,
and the copies being written.  On the reactor thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class Entry:
    size: int


@dataclass(slots=True)
class Fill:
    """A copy being written; voided by a delete or put of its key meanwhile,
    it is removed once written."""

    voided: bool = False


@dataclass(frozen=True)
class CacheBounds:
    max_bytes: int
    max_files: int
    max_item_bytes: int
    # Copies being written at once.
    max_fills: int = 16


@dataclass
class Index:
    """Which copies the slot holds, least recently used first."""

    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    bytes: int = 0
    # Keys by the key path above them: a delete_prefix finds its keys at once.
    below: dict[str, set[str]] = field(default_factory=dict)
    # The most "/" in a key held.
    deepest: int = 0

    def add(self, key: str, entry: Entry) -> None:
        self.drop(key)
        self.entries[key] = entry
        self.bytes += entry.size
        self.below.setdefault(_parent(key), set()).add(key)
        self.deepest = max(self.deepest, key.count("/"))

    def drop(self, key: str) -> Entry | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
            parent = _parent(key)
            siblings = self.below.get(parent)
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self.below[parent]
        return entry

    def under(self, prefix: str) -> list[str]:
        """Keys below prefix: those right below it at once, and a walk of
        the index only if keys may lie deeper still (never for the
        service's deletes: an upload's renditions lie right below their
        prefix, and no key deeper)."""
        if self.deepest >= prefix.count("/") + 2:
            return [key for key in self.entries if key.startswith(prefix + "/")]
        return list(self.below.get(prefix, ()))


def _parent(key: str) -> str:
    return key.rpartition("/")[0]
