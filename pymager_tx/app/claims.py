"""
One derivation of a rendition across every process sharing the store.

A claim row elects the process that derives; the others poll for its result
(20 ms, backing off to 500 ms), for at most the hold limit.  The holder
renews its lease (judged by the database's clock) while it works, for at
most the hold limit too, and notices when a renewal finds its claim taken
over.  A claim's token names the one file its holder may write and fences
it: a holder that lost its claim can neither record nor overwrite anything.
A dead holder's claim is settled: taken over, its file removed, released.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from uuid import uuid4

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.app.api import StoredImage
from pymager_tx.app.peers import POLL_FIRST, POLL_GROWTH, POLL_MOST
from pymager_tx.app.values import REPLACEMENT, Target, claimed_key, not_found
from pymager_tx.core.errors import DerivationPending
from pymager_tx.core.keys import derived_prefix
from pymager_tx.core.model import ImageId, OriginalRecord
from pymager_tx.core.records import Claim, ClaimOutcome
from pymager_tx.ports import IBlobStore, IMetadataStore, IPeers


class Holding:
    """A claim this process holds, as its renewals see it."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.since = 0.0
        self.lost = False  # a renewal found it taken over
        self.expired = False  # held past the hold limit: renewals stopped
        self.stored = False  # a file no row names may stand under the claim's key


class Superseded(Exception):
    """This process may not record the rendition it derived: its claim was
    taken over, or another holder recorded the rendition first."""


Produce = Callable[[Holding], Awaitable[StoredImage]]
ReadRecorded = Callable[[], Awaitable[StoredImage | None]]


class Claims:
    log = Logger()

    def __init__(self, database: IMetadataStore, blobs: IBlobStore, peers: IPeers, hold_limit: float) -> None:
        self._store = database
        self._blobs = blobs
        self._peers = peers
        self._hold_limit = hold_limit

    async def derive(
        self,
        original: OriginalRecord,
        spec: Target,
        produce: Produce,
        read_recorded: ReadRecorded,
        on_peer: Callable[[], object] | None = None,
    ) -> StoredImage:
        """The rendition: produce(holding) once this process holds its claim,
        or read_recorded() once whichever process held it recorded it.
        on_peer() is called when a live peer is found deriving it."""
        delay = POLL_FIRST
        give_up_at: float | None = None
        while True:
            outcome, claim = await self._store.claim_derivation(
                original.image_id,
                spec.variant,
                original.generation,
                self._peers.me,
                uuid4().hex,
                self._peers.lease,
            )
            if outcome is ClaimOutcome.GONE:
                raise not_found(ImageId(original.image_id))
            if outcome is ClaimOutcome.CLAIMED:
                assert claim is not None
                derived = await self._hold(claim, produce)
                if derived is not None:
                    return derived
                continue  # our claim was taken over: wait for its new holder
            if outcome is ClaimOutcome.DONE:
                # Derived meanwhile, here or elsewhere.  If its file is gone
                # after all, its row is forgotten and the next claim wins.
                recorded = await read_recorded()
                if recorded is not None:
                    return recorded
                continue
            if claim is None:
                continue  # released meanwhile
            if not await self._peers.alive(claim.owner):
                await self.settle(claim)
                continue
            # A live peer is deriving it: look again soon, then less often,
            # for as long as a derivation may take, then answer all the same.
            timer = self._peers.timer
            assert timer is not None, "a live peer holds a claim, but this process has no peers"
            if on_peer is not None:
                on_peer()
            if give_up_at is None:
                give_up_at = timer.seconds() + self._hold_limit
            elif timer.seconds() >= give_up_at:
                raise DerivationPending(
                    f"another process is still deriving {original.image_id}-{spec.variant}; try again later",
                    f"{claim.owner} has held the claim on {original.image_id} {spec.variant} "
                    f"for over {self._hold_limit:.0f}s",
                )
            await deferLater(timer, delay)
            delay = min(delay * POLL_GROWTH, POLL_MOST)

    async def _hold(self, claim: Claim, produce: Produce) -> StoredImage | None:
        """produce() under claim, renewing it while the work takes, and end
        the claim either way; None if the claim was lost meanwhile."""
        holding = Holding(claim)
        renewal = None
        timer = self._peers.timer
        if timer is not None:
            holding.since = timer.seconds()
            renewal = LoopingCall(self._renew, holding, timer)
            renewal.clock = timer
            renewal.start(self._peers.lease.total_seconds() / 3, now=False)
        try:
            return await produce(holding)
        except Superseded as superseded:
            self.log.info(
                "Gave up deriving {image_id} {variant} here: {reason}",
                image_id=claim.image_id,
                variant=claim.variant,
                reason=str(superseded),
            )
            return None
        except Exception:
            # Not on GeneratorExit: a coroutine being garbage-collected can
            # no longer wait for a transaction; the lease then runs out.
            if await self.discard_stored(holding):
                await self._store.release_claim(claim)
            raise
        finally:
            if renewal is not None and renewal.running:
                renewal.stop()

    async def discard_stored(self, holding: Holding) -> bool:
        """Remove the file a derivation stored under its claim, which no row
        names; False if it is still there, and then the claim must stay, to
        lead recovery to it should this process die."""
        if not holding.stored:
            return True
        try:
            await self._blobs.delete(claimed_key(holding.claim))
        except Exception as error:
            self.log.warn(
                "Could not remove the unrecorded rendition of {image_id} {variant}; its claim stays: "
                "{reason}",
                image_id=holding.claim.image_id,
                variant=holding.claim.variant,
                reason=str(error),
            )
            return False
        holding.stored = False
        return True

    async def release(self, claim: Claim) -> None:
        await self._store.release_claim(claim)

    def _renew(self, holding: Holding, timer: IReactorTime) -> Deferred[None] | None:
        """Extend a claim while its work goes on, but not for ever: a holder
        stuck (in I/O, say) past the hold limit lets its claim lapse, so a
        peer takes the derivation over."""
        claim = holding.claim
        if holding.lost or holding.expired:
            return None
        if timer.seconds() - holding.since > self._hold_limit:
            holding.expired = True
            self.log.warn(
                "Still deriving {image_id} {variant} after {seconds:.0f}s: letting the claim lapse",
                image_id=claim.image_id,
                variant=claim.variant,
                seconds=self._hold_limit,
            )
            return None

        def renewed(still_held: bool) -> None:
            if not still_held:
                holding.lost = True

        def failed(failure: Failure) -> None:
            # Not a reason to stop: the next renewal may work, and a claim
            # that lapses meanwhile fences this holder from recording.
            self.log.warn(
                "Could not renew the claim on {image_id} {variant}: {reason}",
                image_id=claim.image_id,
                variant=claim.variant,
                reason=failure.getErrorMessage(),
            )

        renewing = self._store.renew_claim(claim, self._peers.lease)
        return renewing.addCallbacks(renewed, failed)

    async def settle(self, claim: Claim) -> None:
        """End the claim of a dead process, and remove the file it may have
        stored without recording it.  The claim is made ours first, keeping
        its token, and ends only once the file is gone: if this process dies
        in between, whoever settles the claim next removes the file."""
        if not await self._store.take_over_claim(claim, self._peers.me, self._peers.lease):
            return  # someone else settled it, or took it over
        self.log.info(
            "Ending the claim of {owner}, which is gone, on {image_id} {variant}",
            image_id=claim.image_id,
            variant=claim.variant,
            owner=claim.owner,
        )
        key = claimed_key(claim)
        # Only the claim's holder could record this file, and it is dead; a
        # row naming it would be one recorded before tokens existed.
        if not await self._store.names_blob(key):
            await self._blobs.delete(key)
            if claim.variant == REPLACEMENT:
                # A replacement's generation nobody sees: the new one before
                # the swap (no renditions yet), the old one after it.
                await self._blobs.delete_prefix(derived_prefix(ImageId(claim.image_id), claim.generation))
        await self._store.release_claim(replace(claim, owner=self._peers.me))
