"""Originals: upload, read and delete; take over an upload nobody carries
out any more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import uuid4

from twisted.logger import Logger

from pymager_tx.app.admitted import ImageWork, describe
from pymager_tx.app.api import StoredImage
from pymager_tx.app.fresh_uploads import FreshUploads
from pymager_tx.app.removals import Removals
from pymager_tx.app.values import Errand, ImagePolicy, not_found, taken
from pymager_tx.core.errors import BlobNotFound, OriginalLost, PymagerError, UploadTooLarge
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import ImageId, OriginalRecord, OriginalStatus
from pymager_tx.core.records import RowState
from pymager_tx.ports import IBlobStore, IMetadataStore, IPeers


@dataclass(frozen=True)
class FoundOriginal:
    record: OriginalRecord
    _originals: Originals

    async def body(self, whole_up_to: int | None = None) -> StoredImage:
        return await self._originals.load(StoredImage(self.record, None), whole_up_to)

    async def confirm(self) -> None:
        await self._originals.confirm(StoredImage(self.record, None))


class Originals:
    log = Logger()

    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        work: ImageWork,
        policy: ImagePolicy,
        clock: Callable[[], datetime],
        peers: IPeers,
        removals: Removals,
        uploads: FreshUploads,
    ) -> None:
        """uploads: told of each upload stored, for its first renditions."""
        self._store = database
        self._blobs = blobs
        self._work = work
        self._policy = policy
        self._clock = clock
        self._peers = peers
        self._removals = removals
        self._uploads = uploads
        # Generations of the uploads this process is carrying out right now,
        # registered before their pending row exists: a pending row of ours
        # whose generation is not here was abandoned.
        self._uploading: set[str] = set()

    async def store(self, image_id: ImageId, data: bytes, arrived: float | None = None) -> OriginalRecord:
        limit = self._policy.max_upload_bytes
        if len(data) > limit:
            raise UploadTooLarge(f"the image is {len(data)} bytes; the limit is {limit}")
        # Cheap early answer for the common conflict; the claim below decides.
        state = await self._store.row_state(image_id.value)
        if state is not None:
            if state.status is OriginalStatus.DELETING:
                # A deletion that failed half-way: finish it, then take the ID.
                # An upload finished under the ID meanwhile is kept, and
                # refuses this one when it claims the ID.
                await self._removals.resume(state)
            elif state.status is OriginalStatus.PENDING:
                await self._take_over_abandoned_upload(state)
            else:
                raise taken(image_id)
        limits = self._policy.limits
        generation = uuid4().hex
        blob_key = original_key(image_id, generation)
        # The probe's decode, kept under the key the upload will have, is
        # what its first renditions start from (on this process).
        keep = self._work.keeping_upload(blob_key, self._policy.allowed_sizes, self._policy.encoding.upscale)
        info, digest = await self._work.admitted(
            lambda: self._work.offload(describe, data, limits, keep), Errand(self._policy.deadline(arrived))
        )
        record = OriginalRecord(
            image_id=image_id.value,
            generation=generation,
            status=OriginalStatus.PENDING,
            format=info.format.name,
            media_type=info.format.media_type,
            width=info.width,
            height=info.height,
            byte_length=len(data),
            sha256=digest,
            blob_key=blob_key,
            created_at=self._clock(),
            blurhash=None if info.summary is None else info.summary.blurhash,
            dominant_color=None if info.summary is None else info.summary.dominant_color,
        )
        # Before the row exists: any removal signal after it voids the hint.
        mark = self._uploads.mark()
        self._uploading.add(generation)
        try:
            await self._store.claim_original(record, self._peers.me)
            try:
                await self._blobs.put(record.blob_key, data)
                ready_at = self._clock()
                if not await self._store.mark_original_ready(record.image_id, generation, ready_at):
                    raise RuntimeError(f"the pending row of {record.image_id!r} vanished before it was ready")
            except BaseException:
                await self._abandon(record)
                raise
        finally:
            self._uploading.discard(generation)
        self.log.info(
            "Stored original {image_id}: {image_format} {width}x{height}, {byte_length} bytes",
            image_id=record.image_id,
            image_format=record.format,
            width=record.width,
            height=record.height,
            byte_length=record.byte_length,
        )
        ready = replace(record, status=OriginalStatus.READY, created_at=ready_at)
        self._uploads.stored(ready, mark)
        return ready

    async def find(self, image_id: ImageId) -> FoundOriginal:
        record = await self._store.find_original(image_id.value)
        if record is None:
            raise not_found(image_id)
        return FoundOriginal(record, self)

    async def load(self, stored: StoredImage, whole_up_to: int | None = None) -> StoredImage:
        """stored, with the bytes of the original it describes; past
        whole_up_to bytes, with a reader of them instead."""
        record = stored.record
        assert isinstance(record, OriginalRecord)
        try:
            if whole_up_to is not None and record.byte_length > whole_up_to:
                return StoredImage(record, None, reader=await self._blobs.open(record.blob_key))
            return StoredImage(record, await self._blobs.get(record.blob_key))
        except BlobNotFound:
            raise await self.missing(record) from None

    async def confirm(self, stored: StoredImage) -> None:
        """Fail as load would if the original's file is gone, without reading
        it: for answers that send no bytes (HEAD, 304)."""
        record = stored.record
        assert isinstance(record, OriginalRecord)
        try:
            # Opened, not just looked up: it fails as reading it would.
            reader = await self._blobs.open(record.blob_key)
        except BlobNotFound:
            raise await self.missing(record) from None
        await reader.close()

    async def missing(self, original: OriginalRecord) -> PymagerError:
        """The error for an original whose file was not found: deleted since
        its row was read (404), or lost from storage (an operator's matter,
        logged as an error; pymager-admin check reports it too)."""
        if not await self.still_current(original):
            return not_found(ImageId(original.image_id))
        self.log.error(
            "The file of original {image_id} is lost ({blob_key}); "
            "`pymager-admin check` reports it, `--repair` forgets the original",
            image_id=original.image_id,
            blob_key=original.blob_key,
        )
        return OriginalLost(
            f"the original stored under the ID {original.image_id!r} is lost from storage; "
            "the operator has been told"
        )

    async def still_current(self, original: OriginalRecord) -> bool:
        current = await self._store.find_original(original.image_id)
        return current is not None and current.generation == original.generation

    async def delete(self, image_id: ImageId) -> None:
        removal = await self._store.begin_removal(image_id.value, self._clock(), self._peers.me)
        if removal is None:
            raise not_found(image_id)
        await self._removals.remove(removal)
        self.log.info(
            "Deleted original {image_id} and {derived_count} derived images",
            image_id=image_id.value,
            derived_count=len(removal.derived_keys),
        )

    async def _take_over_abandoned_upload(self, state: RowState) -> None:
        """Clear the pending row of an upload nobody is carrying out any
        more (its process died, or its own clean-up failed here while the
        database was away), or refuse: the ID is being uploaded."""
        image_id = ImageId(state.image_id)
        if state.owner == self._peers.me:
            abandoned = state.generation not in self._uploading
        else:
            abandoned = not await self._peers.alive(state.owner)
        if not abandoned:
            raise taken(image_id)
        # What was read may be stale by now (the upload may have finished
        # since): take the row over only if it is still that pending upload.
        taken_over = await self._store.abandon_upload(
            state.image_id, state.generation, self._clock(), self._peers.me
        )
        if taken_over is None:
            raise taken(image_id)
        self.log.info("Clearing the abandoned upload of {image_id}", image_id=state.image_id)
        await self._removals.remove(taken_over)

    async def _abandon(self, record: OriginalRecord) -> None:
        """Undo a claimed upload that failed; recovery retries if this fails too."""
        try:
            # The file first: it is this upload's alone, never acknowledged,
            # and it goes even when the database is what failed.
            await self._blobs.delete(record.blob_key)
            removal = await self._store.abandon_upload(
                record.image_id, record.generation, self._clock(), self._peers.me
            )
            if removal is not None:
                await self._removals.remove(removal)
        except Exception:
            self.log.failure("Could not clean up the failed upload of {image_id}", image_id=record.image_id)
