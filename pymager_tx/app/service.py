"""
ImageService: the use cases (pymager_tx.app) put together, behind the one
interface the HTTP layer and the admin tools speak to
(pymager_tx.app.api.ImageServiceAPI).  Nothing here knows
HTTP; nothing here does more than hand each call to the use case that owns
it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from twisted.internet.defer import CancelledError, Deferred

from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.admitted import ImageWork
from pymager_tx.app.api import Found, StoredImage
from pymager_tx.app.claims import Claims
from pymager_tx.app.derivations import Derivations, outcome_of
from pymager_tx.app.inflight import shielded
from pymager_tx.app.meta import Meta
from pymager_tx.app.originals import Originals
from pymager_tx.app.peers import Peers
from pymager_tx.app.readiness import check_ready
from pymager_tx.app.reads import Renditions
from pymager_tx.app.recovery import Recovery
from pymager_tx.app.refusals import RecentRefusals
from pymager_tx.app.removals import Removals
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.replacements import Replacements
from pymager_tx.app.values import ImagePolicy, WorkingCopy, claimed_key
from pymager_tx.core.model import FocalPoint, ImageId, OriginalRecord
from pymager_tx.core.records import OriginalMeta
from pymager_tx.imaging.bands import Helpers
from pymager_tx.imaging.decoded import DecodedPictures
from pymager_tx.ports import (
    NO_METRICS,
    IBlobStore,
    ICachePurger,
    IMetadataStore,
    IPeers,
    Metrics,
    NoCachePurger,
    Offload,
)

__all__ = ["ImagePolicy", "ImageService", "StoredImage", "WorkingCopy", "claimed_key"]


# A database that committed a transaction this recently is answering.
_HEALTHY_WITHIN = 2.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ImageService:
    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        imaging: Offload,
        policy: ImagePolicy,
        clock: Callable[[], datetime] = _utcnow,
        peers: IPeers | None = None,
        cache: RenditionCache | None = None,
        refusals: RecentRefusals | None = None,
        admission: ImageAdmission | None = None,
        metrics: Metrics = NO_METRICS,
        purger: ICachePurger | None = None,
        helpers: Helpers | None = None,
        decoded: DecodedPictures | None = None,
    ) -> None:
        """admission: the bounded queue in front of the image threads; None:
        image work goes straight to imaging, unbounded (tests, the CLI);
        metrics: told of uploads, deletions and derivations; purger: the
        CDN told of deletions and replacements; helpers: threads that take a
        share of a large resize while idle (see imaging.bands); decoded:
        pictures decoded lately, kept for the next rendition (imaging.decoded)."""
        self._store = database
        self._blobs = blobs
        self._clock = clock
        self.policy = policy
        self._metrics = metrics
        peers = peers or Peers.alone()
        cache = cache or RenditionCache(max_bytes=0, max_item_bytes=0, poll_seconds=0)
        self._work = ImageWork(imaging, admission, helpers, decoded)
        removals = Removals(database, blobs, cache.epoch, clock, peers.me)
        claims = Claims(database, blobs, peers, policy.hold_limit)
        self._originals = Originals(
            database, blobs, self._work, policy, clock, peers, removals, cache.uploads
        )
        self._derivations = Derivations(
            database, blobs, self._work, policy, clock, peers, claims, self._originals, metrics
        )
        self._renditions = Renditions(
            database,
            blobs,
            policy,
            cache,
            refusals if refusals is not None else RecentRefusals(),
            self._derivations,
        )
        self._replacements = Replacements(database, blobs, self._work, policy, clock, peers, removals, claims)
        self._purger = purger or NoCachePurger()
        self._meta = Meta(database, blobs, self._work, policy, clock, cache.epoch, peers.me, self._originals)
        self._recovery = Recovery(database, blobs, peers, removals, claims, clock)
        self._removals = removals
        self._me = peers.me

    # Originals

    # Writes, once begun, finish whether or not their caller waits.

    async def store_original(
        self, image_id: ImageId, data: bytes, arrived: float | None = None
    ) -> OriginalRecord:
        try:
            record = await shielded(Deferred.fromCoroutine(self._originals.store(image_id, data, arrived)))
        except CancelledError:
            raise
        except Exception as error:
            self._metrics.upload(outcome_of(error))
            raise
        self._metrics.upload("stored")
        return record

    async def original(self, image_id: ImageId) -> Found:
        return await self._originals.find(image_id)

    async def delete_original(self, image_id: ImageId) -> None:
        await shielded(Deferred.fromCoroutine(self._originals.delete(image_id)))
        self._metrics.deletion()
        self._purger.purge(image_id.value)

    async def replace_original(
        self, image_id: ImageId, data: bytes, etags: Sequence[str] | None, arrived: float | None = None
    ) -> OriginalRecord:
        record = await shielded(
            Deferred.fromCoroutine(self._replacements.replace(image_id, data, etags, arrived))
        )
        self._purger.purge(image_id.value)
        return record

    async def list_originals(self, after: ImageId | None, limit: int) -> tuple[list[OriginalRecord], bool]:
        # One more than asked: whether another page follows, without a count.
        found = await self._store.list_originals(None if after is None else after.value, limit + 1)
        return found[:limit], len(found) > limit

    # Derived images

    async def derived(
        self, name: str, arrived: float | None = None, accept: str | None = None, signed: bool = False
    ) -> Found:
        return await self._renditions.find(name, arrived, accept, signed)

    def derivations_settled(self) -> Deferred[None]:
        """Fires once no derivation runs in this process (a stopping server
        lets the renditions it answered early be stored and recorded)."""
        return self._derivations.settled()

    async def poll_removals(self) -> None:
        await self._renditions.poll_removals()

    # Metadata

    async def meta(self, image_id: ImageId, arrived: float | None = None) -> OriginalMeta:
        return await self._meta.describe(image_id, arrived)

    async def set_focal_point(self, image_id: ImageId, focal_point: FocalPoint | None) -> OriginalMeta:
        return await shielded(Deferred.fromCoroutine(self._meta.refocus(image_id, focal_point)))

    # Operations

    async def check_health(self) -> None:
        """Fails unless the metadata database answers: it did a moment ago
        (when busy, as under load), or it answers a query now (when idle)."""
        if not self._store.answered_within(_HEALTHY_WITHIN):
            await self._store.ping()

    async def check_ready(self) -> None:
        """Fails unless the database answers a query and the blob store
        stores, returns and removes a probe (see readiness)."""
        await check_ready(self._store, self._blobs, self._me)

    def image_load(self) -> dict[str, object] | None:
        return self._work.load()

    async def recover(self) -> None:
        await self._recovery.recover()

    async def sweep(self, my_turn: Callable[[], Deferred[bool]]) -> bool:
        """Finish what processes that are gone left, if my_turn() says this
        process sweeps now (see app.recovery); whether it swept."""
        return await self._recovery.sweep(my_turn)

    async def forget_lost_original(self, image_id: ImageId, generation: str) -> bool:
        return await self._removals.forget_lost(image_id, generation)
