"""
What the service offers its callers (the HTTP layer, the admin tools): the
one interface they depend on, so that a fake can stand in for the service.

A lookup answers with a Found image: its record at once (enough for a HEAD,
a 304, the validators), and its bytes only when asked for.  Reading the
record never reads the file, so HEAD and revalidation stay cheap without the
caller saying how much it wants up front.

Protocols, not zope interfaces: the methods are coroutines, and mypy checks
the service and its fakes against them structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pymager_tx.core.model import FocalPoint, ImageId, OriginalRecord, StoredFile
from pymager_tx.core.records import OriginalMeta
from pymager_tx.ports import IBlobReader


@dataclass(frozen=True)
class StoredImage:
    """An original or derived image as served: its record, and its bytes
    unless only the metadata was asked for (HEAD), or unless they are too
    many to hold: then an open reader to send them from, a part at a time."""

    record: StoredFile
    data: bytes | None
    reader: IBlobReader | None = None
    # False for a rendition sent before its row is written (see
    # app.values.Errand.may_take_answer): the row may never be, so nothing
    # keeps it (the caches, say).
    recorded: bool = field(default=True, compare=False)


class Found(Protocol):
    """An image found by a lookup."""

    @property
    def record(self) -> StoredFile:
        """What was found: the validators, type and length of the answer."""
        ...

    async def body(self, whole_up_to: int | None = None) -> StoredImage:
        """The image with its bytes; past whole_up_to bytes, with an open
        reader of them instead.  Its record may be newer than the one found
        (a rendition derived again because its file was lost)."""
        ...

    async def confirm(self) -> None:
        """Fail as body() would if the bytes are gone, without reading
        them: for answers that send none (HEAD, 304)."""
        ...


class ImageServiceAPI(Protocol):
    """Writes, once begun, finish whether or not their caller still waits:
    cancelling the wait does not cancel the write."""

    async def store_original(
        self, image_id: ImageId, data: bytes, arrived: float | None = None
    ) -> OriginalRecord:
        """Store an upload under image_id; arrived (time.monotonic()) starts
        its time budget."""
        ...

    async def delete_original(self, image_id: ImageId) -> None: ...

    async def replace_original(
        self, image_id: ImageId, data: bytes, etags: Sequence[str] | None, arrived: float | None = None
    ) -> OriginalRecord:
        """Replace the original under image_id whose SHA-256 is one of etags
        (None: whichever is stored); PreconditionFailed if none is."""
        ...

    async def list_originals(self, after: ImageId | None, limit: int) -> tuple[list[OriginalRecord], bool]:
        """At most limit stored originals with IDs after `after`, in ID
        order, and whether more follow."""
        ...

    async def original(self, image_id: ImageId) -> Found: ...

    async def derived(
        self, name: str, arrived: float | None = None, accept: str | None = None, signed: bool = False
    ) -> Found:
        """The rendition a derived name ('<ID>-<W>x<H>[-<mode>].<ext>') asks
        for, derived first if need be, within the time budget counted from
        arrived.  A name is refused in this order: one that does not parse,
        an output format not written, a size not allowed (unless signed: a
        signature over name verified, then any size within the signed
        bounds), an unknown ID.  The extension "auto" takes the format
        accept (the request's Accept header) asks for
        (pymager_tx.core.negotiation)."""
        ...

    async def meta(self, image_id: ImageId, arrived: float | None = None) -> OriginalMeta:
        """The ready original and the renditions stored of it (its summary
        computed first if it was stored before summaries were)."""
        ...

    async def set_focal_point(self, image_id: ImageId, focal_point: FocalPoint | None) -> OriginalMeta:
        """Set or clear the focal point; the crops made for another are
        never served again.  Answers as meta() does."""
        ...

    async def check_health(self) -> None:
        """Fails unless the metadata store answers."""
        ...

    async def check_ready(self) -> None:
        """Fails unless the metadata store answers a query and the blob
        store stores and returns a probe: DatabaseUnavailable or
        StorageUnavailable, naming the part, never a host or a path."""
        ...

    def image_load(self) -> dict[str, object] | None:
        """How busy the image threads are (None: no bounded queue); with
        "full": True when new image work would be refused."""
        ...
