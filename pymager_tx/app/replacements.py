"""
Replacing an original in one step (PUT with If-Match): a new generation
under the same ID, the old renditions gone, every cache voided.

The steps, each leaving something recovery or repair can finish:

1. claim the replacement (a claim of the variant "replacement", naming the
   new upload's file), only while the row is a ready original with an ETag
   the client named;
2. store the new file under the new generation;
3. swap, in one transaction: the row takes the new generation if the claim
   still holds and the row still has that ETag; the old renditions' rows go,
   deletions are counted (and announced); the claim now names the old
   generation;
4. remove the old generation's files, then end the claim.

A crash before 3 leaves the old original served and a dead claim naming
the new file, which recovery removes; a crash after 3 leaves the new one
served and a dead claim naming the old files, which recovery removes.  A
derivation of the old generation that finishes after the swap is refused
its record (record_derived_txn checks the generation), and its file goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from uuid import uuid4

from twisted.logger import Logger

from pymager_tx.app.admitted import ImageWork, describe
from pymager_tx.app.claims import Claims
from pymager_tx.app.removals import Removals
from pymager_tx.app.values import REPLACEMENT, Errand, ImagePolicy
from pymager_tx.core.errors import DatabaseUnavailable, PreconditionFailed, UploadTooLarge
from pymager_tx.core.keys import original_key
from pymager_tx.core.model import ImageId, OriginalRecord, OriginalStatus
from pymager_tx.core.records import Claim, Swapped
from pymager_tx.ports import IBlobStore, IMetadataStore, IPeers


def _stale(image_id: ImageId) -> PreconditionFailed:
    return PreconditionFailed(
        f"If-Match names no original stored under the ID {image_id.value!r}: "
        "it changed since it was read, or there is none"
    )


class Replacements:
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
        claims: Claims,
    ) -> None:
        self._store = database
        self._blobs = blobs
        self._work = work
        self._policy = policy
        self._clock = clock
        self._peers = peers
        self._removals = removals
        self._claims = claims

    async def replace(
        self, image_id: ImageId, data: bytes, etags: Sequence[str] | None, arrived: float | None = None
    ) -> OriginalRecord:
        """Replace the ready original under image_id whose SHA-256 is one of
        etags (None: whichever is stored) by data; PreconditionFailed if
        there is none such, or another replacement of it is under way."""
        limit = self._policy.max_upload_bytes
        if len(data) > limit:
            raise UploadTooLarge(f"the image is {len(data)} bytes; the limit is {limit}")
        limits = self._policy.limits
        info, digest = await self._work.admitted(
            lambda: self._work.offload(describe, data, limits), Errand(self._policy.deadline(arrived))
        )
        generation = uuid4().hex
        record = OriginalRecord(
            image_id=image_id.value,
            generation=generation,
            status=OriginalStatus.READY,
            format=info.format.name,
            media_type=info.format.media_type,
            width=info.width,
            height=info.height,
            byte_length=len(data),
            sha256=digest,
            blob_key=original_key(image_id, generation),
            created_at=self._clock(),
            # A new picture: the old one's focal point does not carry over.
            blurhash=None if info.summary is None else info.summary.blurhash,
            dominant_color=None if info.summary is None else info.summary.dominant_color,
        )
        claim = await self._claim(
            Claim(image_id.value, REPLACEMENT, generation, self._peers.me, uuid4().hex), etags
        )
        try:
            await self._blobs.put(record.blob_key, data)
        except BaseException:
            await self._give_up(claim)
            raise
        record = replace(record, created_at=self._clock())
        try:
            swapped, removal = await self._store.swap_original(record, etags, claim, record.created_at)
        except BaseException:
            # It may have committed: never remove a file on a guess.
            await self._settle_own(claim)
            raise
        if swapped is not Swapped.REPLACED:
            if swapped is Swapped.STALE:
                await self._give_up(claim)
                raise _stale(image_id)
            # Settled by a peer that took this process for dead: it removes the file.
            raise DatabaseUnavailable(
                "the metadata database did not keep up with this process; try again later",
                f"the replacement claim of {image_id.value} was settled by a peer",
            )
        assert removal is not None
        old = replace(claim, generation=removal.original.generation)
        try:
            await self._removals.remove_files(removal)
            await self._claims.release(old)
        except Exception:
            # Acknowledged all the same: the claim leads recovery to the old files.
            self.log.failure("Could not remove the replaced files of {image_id}", image_id=image_id.value)
        self.log.info(
            "Replaced original {image_id}: {image_format} {width}x{height}, {byte_length} bytes; "
            "{derived_count} derived images removed",
            image_id=record.image_id,
            image_format=record.format,
            width=record.width,
            height=record.height,
            byte_length=record.byte_length,
            derived_count=len(removal.derived_keys),
        )
        return record

    async def _claim(self, claim: Claim, etags: Sequence[str] | None) -> Claim:
        image_id = ImageId(claim.image_id)
        for _attempt in range(2):
            claimed, holder = await self._store.claim_replacement(claim, etags, self._peers.lease)
            if claimed:
                return claim
            if holder is None:
                raise _stale(image_id)
            if await self._peers.alive(holder.owner):
                raise PreconditionFailed(
                    f"another replacement of the original under the ID {image_id.value!r} is under way; "
                    "read it again once it is done"
                )
            # A dead process's replacement: finish it (its files go), then claim.
            await self._claims.settle(holder)
        raise _stale(image_id)

    async def _settle_own(self, claim: Claim) -> None:
        """After a swap whose outcome is unknown: settle our claim as it
        now stands (naming the new generation if the swap did not commit,
        the old one if it did), as recovery would; if this fails too, the
        claim stays for recovery."""
        try:
            standing = [held for held in await self._store.claims() if held.token == claim.token]
            for held in standing:
                await self._claims.settle(held)
        except Exception:
            self.log.failure("Could not settle the replacement of {image_id}", image_id=claim.image_id)

    async def _give_up(self, claim: Claim) -> None:
        """Undo a replacement that was not swapped: its file, then its claim;
        if this fails, the claim leads recovery to the file."""
        try:
            await self._blobs.delete(original_key(ImageId(claim.image_id), claim.generation))
            await self._claims.release(claim)
        except Exception:
            self.log.failure(
                "Could not clean up the failed replacement of {image_id}", image_id=claim.image_id
            )
