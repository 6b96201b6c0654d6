"""
Recovery: finish what crashed processes left, at start-up and then in a
periodic sweep, so that a process that never comes back does not leave its
work unfinished until some process starts.

Both finish only what processes that are gone by the peers' judgement left
(their pending uploads, their interrupted deletions, their derivation
claims, their unfinished writes in storage), and every step is conditional
on the row being as it was read: what a live process writes is never
touched, and an acknowledged upload (ready before its 201) never is either.
The sweep runs in one live process at a time: the one whose turn it is
(my_turn: the live process with the smallest name, as the composition root
tells it), so a cluster sweeps once per interval, not once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.internet.defer import Deferred
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
        """At start-up: prepare the store and remove what interrupted writes
        left in it, then finish unfinished uploads and deletions, and
        derivations stored but never recorded, of processes that are gone.
        What live peers hold is left to them, and every step is conditional
        on the row being as it was read, so an upload a peer finishes
        meanwhile is never taken for an interrupted one."""
        upkeep = IStoreUpkeep(self._blobs, None)
        if upkeep is not None:
            await upkeep.recover()
        await self._finish_what_the_dead_left()

    async def sweep(self, my_turn: Callable[[], Deferred[bool]]) -> bool:
        """While serving: what recover() does for peers that are gone, if
        my_turn() says this process sweeps now; whether it swept.  The store
        removes only what dead processes' writes left (IStoreUpkeep.sweep)."""
        if not await my_turn():
            return False
        upkeep = IStoreUpkeep(self._blobs, None)
        if upkeep is not None:
            await upkeep.sweep()
        await self._finish_what_the_dead_left()
        return True

    async def _finish_what_the_dead_left(self) -> None:
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
                owner=state.owner,
            )
            await self._removals.remove(removal)
        for claim in await self._store.claims():
            if not await self._peers.alive(claim.owner):
                await self._claims.settle(claim)
