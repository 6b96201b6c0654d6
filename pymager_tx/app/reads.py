"""
Reading renditions: from memory while the removal signals allow, else from
the row and the file, else derived; refusals of a source remembered a while.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from twisted.logger import Logger

from pymager_tx.app.api import StoredImage
from pymager_tx.app.derivations import Derivations, FocusChanged
from pymager_tx.app.refusals import RecentRefusals
from pymager_tx.app.rendition_cache import Mark, RenditionCache
from pymager_tx.app.values import ImagePolicy, not_found
from pymager_tx.core.errors import (
    BlobNotFound,
    DatabaseUnavailable,
    DerivationPending,
    DerivationTooCostly,
    ImageNotFound,
    InvalidImage,
    OriginalLost,
    Overloaded,
    SizeNotAllowed,
    SizeOutOfBounds,
    Unavailable,
    UnsupportedOutputFormat,
)
from pymager_tx.core.formats import ImageFormat
from pymager_tx.core.model import (
    DerivedRecord,
    DerivedSpec,
    ImageId,
    OriginalRecord,
    StoredFile,
    parse_derived_name,
)
from pymager_tx.core.negotiation import AUTO_EXTENSION, negotiate
from pymager_tx.imaging.formats import output_format_for, writable_extensions, writable_names
from pymager_tx.ports import IBlobStore, IMetadataStore

# Derivations of one request begun again when the focal point changed, or
# the original was replaced, under them.
_REFOCUS_TRIES = 3


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

    async def find(
        self, name: str, arrived: float | None = None, accept: str | None = None, signed: bool = False
    ) -> FoundRendition:
        image_id, spec = self.request(name, accept, signed)
        fetched = await self.fetch(image_id, spec, with_body=False, arrived=arrived)
        return FoundRendition(fetched, image_id, spec, self)

    def request(
        self, name: str, accept: str | None = None, signed: bool = False
    ) -> tuple[ImageId, DerivedSpec]:
        """Check a derived name in the original service's order: a name that
        does not parse, then the format, then the size: allowed, or signed
        (signed: its signature verified) and within the signed bounds.  A
        name ending in ".auto" takes the format accept (the request's Accept
        header) asks for: the rendition of that explicit extension, or the
        fallback."""
        parsed = parse_derived_name(name)
        output: ImageFormat | None
        alpha_output = None
        if parsed.extension == AUTO_EXTENSION:
            output, alpha_output = negotiate(accept, writable_names())
        else:
            output = output_format_for(parsed.extension)
        if output is None:
            raise UnsupportedOutputFormat(
                f"cannot write {parsed.extension!r} images; "
                f"supported: {', '.join(sorted([*writable_extensions(), AUTO_EXTENSION]))}"
            )
        size = parsed.size
        if size.width == 0 and size.height == 0:
            raise SizeOutOfBounds("the size 0x0 has no side to keep the aspect ratio from; at most one is 0")
        allowed = self._policy.allowed_sizes
        if size not in allowed:
            if not signed:
                raise SizeNotAllowed(
                    f"the size {size} is not allowed; "
                    f"allowed: {', '.join(str(size) for size in sorted(allowed))}"
                )
            self._policy.signed_bounds.check_named(size)
        return parsed.image_id, DerivedSpec(size, output, parsed.mode, alpha_output)

    def _for_original(self, spec: DerivedSpec, original: OriginalRecord) -> DerivedSpec:
        """spec with a 0 side worked out from the original's displayed
        size, within the bounds of a signed size (listed or signed: nobody
        chose the side it comes to)."""
        sized = spec.for_picture(original.width, original.height)
        if sized.named_size is not None:
            self._policy.signed_bounds.check_worked_out(sized.named_size, sized.size)
        return sized

    async def fetch(
        self,
        image_id: ImageId,
        spec: DerivedSpec,
        with_body: bool = True,
        arrived: float | None = None,
        refocus_tries: int = _REFOCUS_TRIES,
    ) -> Fetched:
        """The derived image, derived first if need be.  arrived: when the
        request came (time.monotonic()); the time budget counts from then,
        time spent queueing for an image thread included.  A crop derived
        while the focal point changed is derived again for the new one."""
        key = (image_id.value, spec.variant)
        held = self._cache.fresh(key)
        if held is not None:
            return Fetched(StoredImage(*held))
        known = await self._known(key, with_body)
        if known is not None:
            return known
        # A crop is made for the focal point, which can change without a new
        # upload: only the database knows the current one.  Nothing else a
        # rendition depends on changes within a generation, which the claim
        # checks.
        fresh = None if spec.mode.focused else self._cache.uploads.first_ask(image_id.value, spec.variant)
        if fresh is None:
            looked_up = await self._look_up(image_id, spec, with_body)
            if isinstance(looked_up, Fetched):
                return looked_up
            original, mark = looked_up
        else:
            # Stored here, and this variant first asked for now: its claim
            # tells whether another process derived it or the original went.
            original, mark = fresh
        target = self._for_original(spec, original)
        rendition = (original.image_id, original.generation, target.variant)
        refused = self._refusals.recall(rendition)
        if refused is not None:
            raise refused
        try:
            unchanged = (lambda: self._cache.current(mark)) if self._policy.answer_before_stored else None
            errand = self._derivations.errand(
                arrived, unchanged, keep=lambda kept: self._remember(kept, mark)
            )
            stored = await self._derivations.derive(original, target, errand)
        except FocusChanged as changed:
            if refocus_tries <= 1:
                raise DerivationPending(
                    "the focal point of this image keeps changing; try again shortly", str(changed)
                ) from None
            return await self.fetch(image_id, spec, with_body, arrived, refocus_tries - 1)
        except ImageNotFound as gone:
            # Replaced while it was derived (PUT with If-Match): the result
            # was refused; looking again derives it from the new upload.
            self._cache.uploads.forget(image_id.value)
            if isinstance(gone, OriginalLost) or refocus_tries <= 1 or not await self._replaced(original):
                raise
            return await self.fetch(image_id, spec, with_body, arrived, refocus_tries - 1)
        except (InvalidImage, DerivationTooCostly) as error:
            # Refused for what the source is: it would be refused again.
            self._refusals.remember(rendition, error)
            raise
        except (Overloaded, DatabaseUnavailable):
            if fresh is None:
                raise
            # Refused before the claim could say whether another process had
            # derived it (the image queue full, this process's lease lapsed):
            # the lookup can, without an image thread or a claim.
            return await self.fetch(image_id, spec, with_body, arrived, refocus_tries)
        return self._remember(stored, mark)

    async def _look_up(
        self, image_id: ImageId, spec: DerivedSpec, with_body: bool
    ) -> Fetched | tuple[OriginalRecord, Mark]:
        """The rendition as its row describes it; or, derived nowhere yet,
        its original and the Mark taken before the lookup found it so."""
        key = (image_id.value, spec.variant)
        mark = self._cache.mark()
        lookup = await self._store.lookup_derived(image_id.value, spec.variant)
        if lookup.original is None:
            raise not_found(image_id)
        if lookup.derived is not None:
            data = self._cache.confirmed(key, lookup.derived, mark)
            if data is not None:
                return Fetched(StoredImage(lookup.derived, data))
            stored = await self._derivations.read(lookup.derived, with_body)
            if stored is not None:
                return self._remember(stored, mark)
        return lookup.original, mark

    async def _replaced(self, original: OriginalRecord) -> bool:
        """Whether another upload took the ID's place since original was read."""
        current = await self._store.find_original(original.image_id)
        return current is not None and current.generation != original.generation

    async def _known(self, key: tuple[str, str], with_body: bool) -> Fetched | None:
        """The rendition as its remembered row describes it, if the removal
        signals allow: no database query; None if its file is gone (the
        database is asked then)."""
        known = self._cache.records.fresh(key)
        if known is None:
            return None
        record, checked = known
        if not with_body:
            return Fetched(StoredImage(record, None), checked)
        try:
            data = await self._blobs.get(record.blob_key)
        except BlobNotFound:
            self._cache.records.drop(key)
            return None
        return self._remember(StoredImage(record, data), checked)

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
            self._cache.records.drop((image_id.value, spec.variant))
            return (await self.fetch(image_id, spec)).stored
        return loaded if fetched.checked is None else self._remember(loaded, fetched.checked).stored

    def _remember(self, stored: StoredImage, checked: Mark) -> Fetched:
        """stored, kept in memory if it has its bytes; else marked with when
        it was checked, for load to keep it once it has them."""
        if not stored.recorded:
            # Sent before its row is written: a row that may never be, or
            # not as this one (another holder's), is kept by nothing.
            return Fetched(stored)
        record = stored.record
        assert isinstance(record, DerivedRecord)
        key = (record.image_id, record.variant)
        self._cache.records.put(key, record, checked)
        if stored.data is None:
            return Fetched(stored, checked)
        self._cache.put(key, record, stored.data, checked)
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
