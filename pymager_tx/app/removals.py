"""Carrying out a removal: the one place that takes an upload's files, then
its row, once the row is marked deleting (by a client's DELETE, by an
upload found abandoned, by recovery, or by repair)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pymager_tx.core.keys import derived_prefix
from pymager_tx.core.model import ImageId
from pymager_tx.core.records import Removal, RowState
from pymager_tx.ports import IBlobStore, IEpoch, IMetadataStore


class Removals:
    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        epoch: IEpoch,
        clock: Callable[[], datetime],
        me: str,
    ) -> None:
        """epoch: the removal signal every process sharing the store hears;
        me: this process, named on the rows it marks for deletion."""
        self._me = me
        self._store = database
        self._blobs = blobs
        self._epoch = epoch
        self._clock = clock

    async def remove(self, removal: Removal) -> None:
        """Remove the files of an upload whose row is marked deleting, then
        the row.  Every key removed belongs to that upload's generation."""
        await self.remove_files(removal)
        await self._store.forget_original(removal.original.image_id, removal.original.generation)

    async def remove_files(self, removal: Removal) -> None:
        """Remove the files of an upload nobody sees any more (its row is
        marked deleting, or a replacement moved it to a new generation)."""
        # The row is hidden already; from here no process may serve this
        # image's renditions from memory without asking the database again.
        self._epoch.bump()
        original = removal.original
        await self._blobs.delete(original.blob_key)
        for key in removal.derived_keys:
            await self._blobs.delete(key)
        await self._blobs.delete_prefix(derived_prefix(ImageId(original.image_id), original.generation))

    async def resume(self, state: RowState) -> bool:
        """Finish the interrupted deletion read in state, if the row is still
        that deletion; an upload finished under the ID meanwhile is kept."""
        removal = await self._store.resume_removal(state.image_id, state.generation)
        if removal is None:
            return False
        await self.remove(removal)
        return True

    async def forget_lost(self, image_id: ImageId, generation: str) -> bool:
        """Forget this upload, whose file is lost, so that its ID can be
        uploaded again; False if it is not that ready upload any more."""
        removal = await self._store.forget_lost_original(image_id.value, generation, self._clock(), self._me)
        if removal is None:
            return False
        await self.remove(removal)
        return True
