"""A fake of the service's interface (pymager_tx.app.api.ImageServiceAPI):
answers from dicts, fails as told, and counts what the routes asked of it,
so that statuses, headers and problem bodies are tested in milliseconds."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from pymager_tx.adapters.storage.memory import BytesReader
from pymager_tx.app.api import Found, ImageServiceAPI, StoredImage
from pymager_tx.core.errors import ImageIdTaken, ImageNotFound, PreconditionFailed, PymagerError
from pymager_tx.core.model import (
    DerivedRecord,
    FocalPoint,
    ImageId,
    OriginalRecord,
    OriginalStatus,
    StoredFile,
)
from pymager_tx.core.records import OriginalMeta

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def original_record(image_id: str, data: bytes, media_type: str = "image/png") -> OriginalRecord:
    return OriginalRecord(
        image_id=image_id,
        format=media_type.split("/")[1],
        media_type=media_type,
        width=10,
        height=20,
        byte_length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blob_key=f"originals/{image_id}",
        created_at=CREATED,
        generation="g1",
        status=OriginalStatus.READY,
    )


def derived_record(name: str, data: bytes) -> DerivedRecord:
    return DerivedRecord(
        image_id=name.rsplit("-", 1)[0],
        format="jpeg",
        media_type="image/jpeg",
        width=10,
        height=10,
        byte_length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blob_key=f"derived/{name}",
        created_at=CREATED,
        variant=name,
    )


@dataclass
class FakeFound:
    record: StoredFile
    data: bytes
    calls: list[str]
    # What body() finds instead, when the image changed since the lookup.
    renewed: tuple[StoredFile, bytes] | None = None
    fails: PymagerError | None = None

    async def body(self, whole_up_to: int | None = None) -> StoredImage:
        self.calls.append("body")
        if self.fails is not None:
            raise self.fails
        record, data = self.renewed or (self.record, self.data)
        if whole_up_to is not None and len(data) > whole_up_to:
            return StoredImage(record, None, reader=BytesReader(data))
        return StoredImage(record, data)

    async def confirm(self) -> None:
        self.calls.append("confirm")
        if self.fails is not None:
            raise self.fails


@dataclass
class FakeImageService:
    found: dict[str, FakeFound] = field(default_factory=dict)
    # Raised by the next call of the named method.
    failures: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    load: dict[str, object] | None = None
    # The Accept header of each derived() call, as the routes passed it.
    accepts: list[str | None] = field(default_factory=list)

    def hold(self, key: str, record: StoredFile, data: bytes) -> FakeFound:
        self.found[key] = FakeFound(record, data, self.calls)
        return self.found[key]

    def _fail(self, method: str) -> None:
        self.calls.append(method)
        if method in self.failures:
            raise self.failures.pop(method)

    async def store_original(
        self, image_id: ImageId, data: bytes, arrived: float | None = None
    ) -> OriginalRecord:
        self._fail("store_original")
        if image_id.value in self.found:
            raise ImageIdTaken(f"the ID {image_id.value!r} is taken")
        record = original_record(image_id.value, data)
        self.hold(image_id.value, record, data)
        return record

    async def delete_original(self, image_id: ImageId) -> None:
        self._fail("delete_original")
        if self.found.pop(image_id.value, None) is None:
            raise ImageNotFound(f"no original is stored under the ID {image_id.value!r}")

    async def replace_original(
        self, image_id: ImageId, data: bytes, etags: Sequence[str] | None, arrived: float | None = None
    ) -> OriginalRecord:
        self._fail("replace_original")
        found = self.found.get(image_id.value)
        if found is None or (etags is not None and found.record.sha256 not in etags):
            raise PreconditionFailed(f"If-Match names no original stored under {image_id.value!r}")
        record = original_record(image_id.value, data)
        self.hold(image_id.value, record, data)
        return record

    async def list_originals(self, after: ImageId | None, limit: int) -> tuple[list[OriginalRecord], bool]:
        self._fail("list_originals")
        ids = sorted(key for key, found in self.found.items() if isinstance(found.record, OriginalRecord))
        following = [key for key in ids if after is None or key > after.value]
        records = [self.found[key].record for key in following[: limit + 1]]
        return [record for record in records[:limit] if isinstance(record, OriginalRecord)], len(
            records
        ) > limit

    async def original(self, image_id: ImageId) -> Found:
        self._fail("original")
        return self._find(image_id.value)

    async def derived(
        self, name: str, arrived: float | None = None, accept: str | None = None, signed: bool = False
    ) -> Found:
        self._fail("derived")
        self.accepts.append(accept)
        if signed:
            self.calls.append("signed")
        return self._find(name)

    def _find(self, key: str) -> Found:
        if key not in self.found:
            raise ImageNotFound(f"nothing is stored under {key!r}")
        return self.found[key]

    async def meta(self, image_id: ImageId, arrived: float | None = None) -> OriginalMeta:
        self._fail("meta")
        return self._meta_of(image_id)

    async def set_focal_point(self, image_id: ImageId, focal_point: FocalPoint | None) -> OriginalMeta:
        self._fail("set_focal_point")
        found = self._meta_of(image_id)
        original = found.original
        moved = replace(
            original,
            focal_x=None if focal_point is None else focal_point.x,
            focal_y=None if focal_point is None else focal_point.y,
        )
        self.found[image_id.value].record = moved
        return OriginalMeta(moved, found.renditions)

    def _meta_of(self, image_id: ImageId) -> OriginalMeta:
        record = self._find(image_id.value).record
        if not isinstance(record, OriginalRecord):
            raise ImageNotFound(f"no original is stored under {image_id.value!r}")
        renditions = tuple(
            found.record
            for found in self.found.values()
            if isinstance(found.record, DerivedRecord) and found.record.image_id == image_id.value
        )
        return OriginalMeta(record, renditions)

    async def check_health(self) -> None:
        self._fail("check_health")

    async def check_ready(self) -> None:
        self._fail("check_ready")

    def image_load(self) -> dict[str, object] | None:
        return self.load


def renewed(found: FakeFound, data: bytes) -> None:
    """Make found's body a newer image than its record says."""
    found.renewed = (
        replace(found.record, sha256=hashlib.sha256(data).hexdigest(), byte_length=len(data)),
        data,
    )


# The fake keeps to the interface the routes depend on.
_checked: ImageServiceAPI = FakeImageService()
