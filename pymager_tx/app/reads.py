"""
Reading renditions: from memory while the removal signals allow, else from
the row and the file, else derived; refusals of a source remembered a while.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from twisted.logger import Logger

from pymager_tx.app.api import StoredImage
from pymager_tx.app.derivations import Derivations
from pymager_tx.app.refusals import RecentRefusals
from pymager_tx.app.rendition_cache import Mark, RenditionCache
from pymager_tx.app.values import ImagePolicy, not_found
from pymager_tx.core.errors import (
    BlobNotFound,
    DerivationTooCostly,
    ImageNotFound,
    InvalidImage,
    OriginalLost,
    SizeNotAllowed,
    Unavailable,
    UnsupportedOutputFormat,
)
from pymager_tx.core.model import (
    DerivedRecord,
    DerivedSpec,
    ImageId,
    OriginalRecord,
    StoredFile,
    parse_derived_name,
)
from pymager_tx.imaging.formats import output_format_for, writable_extensions
from pymager_tx.ports import IBlobStore, IMetadataStore


class Fetched(NamedTuple):
    stored: StoredImage
    # For a rendition read without its bytes: when its row was checked, so
    # that the bytes, once read, may be kept in memory.
    checked: Mark | None = None


@dataclass(frozen=True)
class FoundRendition:
    found: Fetched
    image_id: ImageId
    spec: DerivedSpec
    _renditions: Renditions

    @property
    def record(self) -> StoredFile:
        return self.found.stored.record

    async def body(self, whole_up_to: int | None = None) -> StoredImage:
        return await self._renditions.load(self.image_id, self.spec, self.found, whole_up_to)

    async def confirm(self) -> None:
        """A rendition whose file is lost is derived again when read: there
        is nothing to confirm."""


class Renditions:
    log = Logger()

    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        policy: ImagePolicy,
        cache: RenditionCache,
        refusals: RecentRefusals,
        derivations: Derivations,
    ) -> None:
        self._store = database
        self._blobs = blobs
        self._policy = policy
        self._cache = cache
        self._refusals = refusals
        self._derivations = derivations

    async def find(self, name: str, arrived: float | None = None) -> FoundRendition:
        image_id, spec = self.request(name)
        fetched = await self.fetch(image_id, spec, with_body=False, arrived=arrived)
        return FoundRendition(fetched, image_id, spec, self)

    def request(self, name: str) -> tuple[ImageId, DerivedSpec]:
        """Check a derived name in the original service's order: a name that
        does not parse, then the format, then the size."""
        parsed = parse_derived_name(name)
        output = output_format_for(parsed.extension)
        if output is None:
            raise UnsupportedOutputFormat(
                f"cannot write {parsed.extension!r} images; "
                f"supported: {', '.join(sorted(writable_extensions()))}"
            )
        allowed = self._policy.allowed_sizes
        if parsed.size not in allowed:
            raise SizeNotAllowed(
                f"the size {parsed.size} is not allowed; "
                f"allowed: {', '.join(str(size) for size in sorted(allowed))}"
            )
        return parsed.image_id, DerivedSpec(parsed.size, output, parsed.mode)

    async def fetch(
        self, image_id: ImageId, spec: DerivedSpec, with_body: bool = True, arrived: float | None = None
    ) -> Fetched:
        """The derived image, derived first if need be.  arrived: when the
        request came (time.monotonic()); the time budget counts from then,
        time spent queueing for an image thread included."""
        key = (image_id.value, spec.variant)
        held = self._cache.fresh(key)
        if held is not None:
            return Fetched(StoredImage(*held))
        mark = self._cache.mark()
        lookup = await self._store.lookup_derived(image_id.value, spec.variant)
        original = lookup.original
        if original is None:
            raise not_found(image_id)
        if lookup.derived is not None:
            data = self._cache.confirmed(key, lookup.derived, mark)
            if data is not None:
                return Fetched(StoredImage(lookup.derived, data))
            stored = await self._derivations.read(lookup.derived, with_body)
            if stored is not None:
                return self._remember(stored, mark)
        rendition = (original.image_id, original.generation, spec.variant)
        refused = self._refusals.recall(rendition)
        if refused is not None:
            raise refused
        try:
            stored = await self._derive_current(original, spec, arrived)
        except (InvalidImage, DerivationTooCostly) as error:
            # Refused for what the source is: it would be refused again.
            self._refusals.remember(rendition, error)
            raise
        return self._remember(stored, mark)

    async def _derive_current(
        self, original: OriginalRecord, spec: DerivedSpec, arrived: float | None
    ) -> StoredImage:
        errand = self._derivations.errand(arrived)
        try:
            return await self._derivations.derive(original, spec, errand)
        except ImageNotFound as gone:
            if isinstance(gone, OriginalLost):
                raise
            # Replaced while it was derived (PUT with If-Match): the result
            # was refused; derive it from the new upload, once.
            current = await self._store.find_original(original.image_id)
            if current is None or current.generation == original.generation:
                raise
            return await self._derivations.derive(current, spec, errand)

    async def load(
        self, image_id: ImageId, spec: DerivedSpec, fetched: Fetched, whole_up_to: int | None = None
    ) -> StoredImage:
        """stored, with the bytes of the derived image it describes (derived
        again if its file went missing); past whole_up_to bytes, and too
        large to keep in memory, with a reader of them instead."""
        stored = fetched.stored
        if stored.data is not None:
            return stored
        assert isinstance(stored.record, DerivedRecord)
        if whole_up_to is not None and stored.record.byte_length > max(
            whole_up_to, self._cache.max_item_bytes
        ):
            try:
                return replace(stored, reader=await self._blobs.open(stored.record.blob_key))
            except BlobNotFound:
                pass  # read below, which derives it again
        loaded = await self._derivations.read(stored.record, with_body=True)
        if loaded is None:
            return (await self.fetch(image_id, spec)).stored
        return loaded if fetched.checked is None else self._remember(loaded, fetched.checked).stored

    def _remember(self, stored: StoredImage, checked: Mark) -> Fetched:
        """stored, kept in memory if it has its bytes; else marked with when
        it was checked, for load to keep it once it has them."""
        record = stored.record
        assert isinstance(record, DerivedRecord)
        if stored.data is None:
            return Fetched(stored, checked)
        self._cache.put((record.image_id, record.variant), record, stored.data, checked)
        return Fetched(stored)

    async def poll_removals(self) -> None:
        """Learn of deletions made by processes on other machines, so that
        no derived image held in memory outlives one for long."""
        try:
            self._cache.heard_removals(await self._store.removal_count())
        except Unavailable as error:
            # Held images stop being served when the polls stop answering.
            self.log.warn("Cannot poll for deletions: {reason}", reason=error.reason)
        except Exception:
            self.log.failure("Cannot poll for deletions")
