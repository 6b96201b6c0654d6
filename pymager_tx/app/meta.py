"""
What GET /meta tells of an original, and its focal point (PATCH /meta).

The summary (BlurHash, dominant colour) is computed at upload.  Originals
stored before summaries existed get theirs on the first GET /meta: one
decode on the image threads, through the admission queue like any image
work, recorded so it is never computed again.  Lazily rather than null for
ever, because the placeholder is most wanted for the images already in
use, and rather than in a migration, because a migration must not decode
every image in the store.

A change of the focal point moves every crop: the renditions made for the
old one lose their rows in the same transaction (which counts as a
removal, so every process stops serving them from memory), their files
are removed after, and a derivation still running for the old one is
refused when it comes to record its result (Recorded.STALE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from twisted.logger import Logger

from pymager_tx.app.admitted import ImageWork, summarize_image
from pymager_tx.app.originals import Originals
from pymager_tx.app.values import Errand, ImagePolicy, WorkingCopy, not_found
from pymager_tx.core.errors import BlobNotFound, DerivationTooCostly, InvalidImage
from pymager_tx.core.model import FocalPoint, ImageId
from pymager_tx.core.records import OriginalMeta
from pymager_tx.ports import IBlobStore, IEpoch, IMetadataStore

_WORKING = WorkingCopy(frozenset()).variant


class Meta:
    log = Logger()

    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        work: ImageWork,
        policy: ImagePolicy,
        clock: Callable[[], datetime],
        epoch: IEpoch,
        me: str,
        originals: Originals,
    ) -> None:
        self._store = database
        self._blobs = blobs
        self._work = work
        self._policy = policy
        self._clock = clock
        self._epoch = epoch
        self._me = me
        self._originals = originals

    async def describe(self, image_id: ImageId, arrived: float | None = None) -> OriginalMeta:
        meta = await self._store.original_meta(image_id.value)
        if meta is None:
            raise not_found(image_id)
        # The working copy is no rendition a URL names.
        meta = replace(meta, renditions=tuple(r for r in meta.renditions if r.variant != _WORKING))
        if meta.original.blurhash is None:
            return await self._summarized(meta, arrived)
        return meta

    async def refocus(self, image_id: ImageId, focal_point: FocalPoint | None) -> OriginalMeta:
        refocused = await self._store.refocus(image_id.value, focal_point, self._clock(), self._me)
        if refocused is None:
            raise not_found(image_id)
        if refocused.changed:
            # The rows are gone: from here no process on this machine serves
            # the old crops from memory without asking the database again.
            self._epoch.bump()
            self.log.info(
                "Focal point of {image_id} set to {focal_point}; {stale_count} renditions to make again",
                image_id=image_id.value,
                focal_point=None if focal_point is None else (focal_point.x, focal_point.y),
                stale_count=len(refocused.stale_keys),
            )
        for key in refocused.stale_keys:
            try:
                await self._blobs.delete(key)
            except Exception as error:
                # No row names it: `pymager-admin check --repair` removes it.
                self.log.warn("Could not remove {blob_key}: {reason}", blob_key=key, reason=str(error))
        return await self.describe(image_id)

    async def _summarized(self, meta: OriginalMeta, arrived: float | None) -> OriginalMeta:
        original = meta.original
        try:
            data = await self._blobs.get(original.blob_key)
        except BlobNotFound:
            raise await self._originals.missing(original) from None
        limits = self._policy.limits
        try:
            summary = await self._work.admitted(
                lambda: self._work.offload(summarize_image, data, limits),
                Errand(self._policy.deadline(arrived)),
            )
        except (InvalidImage, DerivationTooCostly) as error:
            # Stored under other settings (a decoder since left out): no
            # summary, but the rest of the metadata all the same.
            self.log.warn(
                "No summary of {image_id}: {reason}", image_id=original.image_id, reason=error.detail
            )
            return meta
        if summary is None:
            return meta
        await self._store.store_summary(
            original.image_id, original.generation, summary.blurhash, summary.dominant_color
        )
        summarized = replace(original, blurhash=summary.blurhash, dominant_color=summary.dominant_color)
        return replace(meta, original=summarized)
