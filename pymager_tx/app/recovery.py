"""Start-up recovery: finish what crashed processes left."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.logger import Logger

from pymager_tx.app.claims import Claims
from pymager_tx.app.removals import Removals
from pymager_tx.core.model import OriginalStatus
from pymager_tx.ports import IBlobStore, IMetadataStore, IPeers, IStoreUpkeep


class Recovery:
    log = Logger()

    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        peers: IPeers,
        removals: Removals,
        claims: Claims,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = database
        self._blobs = blobs
        self._peers = peers
        self._removals = removals
        self._claims = claims
        self._clock = clock

    async def recover(self) -> None:
        """Finish unfinished writes in storage, uploads and deletions that
        never completed, and derivations stored but never recorded.  What
        live peers hold is left to them, and every step is conditional on
        the row being as it was read, so an upload a peer finishes meanwhile
        is never taken for an interrupted one."""
        upkeep = IStoreUpkeep(self._blobs, None)
        if upkeep is not None:
            await upkeep.recover()
        for state in await self._store.unfinished():
            if await self._peers.alive(state.owner):
                continue  # a live process's upload or deletion, under way
            if state.status is OriginalStatus.PENDING:
                removal = await self._store.abandon_upload(
                    state.image_id, state.generation, self._clock(), self._peers.me
                )
            else:
                removal = await self._store.resume_removal(state.image_id, state.generation)
            if removal is None:
                continue  # finished or changed meanwhile: not ours to touch
            self.log.info(
                "Finishing interrupted {status} of {image_id}",
                status="upload" if state.status is OriginalStatus.PENDING else "deletion",
                image_id=state.image_id,
                generation=state.generation,
            )
            await self._removals.remove(removal)
        for claim in await self._store.claims():
            if not await self._peers.alive(claim.owner):
                await self._claims.settle(claim)
