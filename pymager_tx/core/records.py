"""What the metadata store answers: plain values, the same for every store
(see ports.IMetadataStore)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pymager_tx.core.model import DerivedRecord, OriginalRecord, OriginalStatus


@dataclass(frozen=True)
class DerivedLookup:
    original: OriginalRecord | None
    derived: DerivedRecord | None


@dataclass(frozen=True)
class Removal:
    """What deleting an original must remove from storage."""

    original: OriginalRecord
    derived_keys: tuple[str, ...]
    owner: str | None = None  # the process that holds it, while pending


class ClaimOutcome(Enum):
    CLAIMED = "claimed"  # ours to derive
    HELD = "held"  # another process is deriving it
    DONE = "done"  # already derived: read its row
    GONE = "gone"  # the original (this generation of it) is not ready


@dataclass(frozen=True)
class Claim:
    image_id: str
    variant: str
    generation: str
    owner: str
    # Names the one file this claim's holder may write (empty for claims of
    # releases before tokens), and fences the holder: it records its result
    # only while its claim still carries this token.
    token: str = ""


@dataclass(frozen=True)
class RowState:
    """What one statement read of an original's row: every destructive step
    taken from it is conditional on the row still being in this state."""

    image_id: str
    generation: str
    status: OriginalStatus
    owner: str | None


class Recorded(Enum):
    RECORDED = "recorded"  # the row names our file now
    ALREADY = "already"  # another holder's row was there first: ours is surplus
    LOST = "lost"  # our claim was taken over: we may not record
    GONE = "gone"  # the original (this generation of it) is not ready any more
    STALE = "stale"  # made for a focal point that has changed since


@dataclass(frozen=True)
class OriginalMeta:
    """An original and the renditions stored of it (GET /meta)."""

    original: OriginalRecord
    renditions: tuple[DerivedRecord, ...]


@dataclass(frozen=True)
class Refocused:
    """A focal point changed: the original as it is now, and the files of
    the renditions made for the old one, whose rows are gone."""

    original: OriginalRecord
    stale_keys: tuple[str, ...]
    changed: bool  # False: the focal point was that already, nothing done


@dataclass(frozen=True)
class StoreIndex:
    """What the metadata says should be in storage, for consistency checks."""

    ready_originals: dict[str, tuple[str, str]]  # blob key -> (image ID, generation)
    unfinished_originals: dict[str, str]  # blob key -> image ID, pending or deleting
    derived: dict[str, str]  # blob key -> image ID
    claimed: dict[str, Claim]  # blob key a claimed derivation will write -> claim

    def references(self, key: str) -> bool:
        return any(key in keys for keys in (self.ready_originals, self.unfinished_originals, self.derived))


class Swapped(Enum):
    """How a replacement's swap of generations ended."""

    REPLACED = "replaced"  # the row names the new upload now
    STALE = "stale"  # no ready original with an ETag the client named
    LOST = "lost"  # the replacement's claim was settled by a peer: this process counted as dead
