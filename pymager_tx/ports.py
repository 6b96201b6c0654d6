"""
The ports: what the use cases need of the world, as interfaces, with the
fake beside the real one (pymager_tx.adapters.storage.memory for blobs,
immediate() for the offload seam).

- IBlobStore / IBlobReader / IKeyListing: bytes under keys (files, memory;
  S3 to come); IStoreUpkeep: the chores of a store that needs them.
- Offload: the seam to thread pools; everything that may block goes through
  one (decoding, resizing, encoding, file I/O, database transactions).
- IEpoch: the removal signal, which voids what processes hold in memory;
  IRemovalFeed: deletions heard from other machines as they commit.
- IMetadataStore: the metadata, as named transactions (the SQL database,
  pymager_tx.adapters.sql.database.Database, provides it).
- IPeers: peer liveness, the other processes sharing the store.
- Metrics: what the service counts and times (recording nothing here).
- ICachePurger: the CDN in front, told of deletions and replacements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from pymager_tx.core.errors import BlobNotFound
from pymager_tx.core.model import DerivedRecord, FocalPoint, OriginalRecord
from pymager_tx.core.records import (
    Claim,
    ClaimOutcome,
    DerivedLookup,
    OriginalMeta,
    Recorded,
    Refocused,
    Removal,
    RowState,
    StoreIndex,
    Swapped,
)

T = TypeVar("T")


class IBlobReader(Interface):
    """One stored blob, opened for reading a part at a time, so that an
    answer is sent as the client takes it instead of held whole."""

    size: int

    def read(size: int) -> Deferred[bytes]:
        """The next bytes, at most size of them; b"" once all were read."""

    def skip(count: int) -> Deferred[None]:
        """Pass over the next count bytes (past the end: to the end) without
        holding them, so that a range of a large blob is read alone."""

    def close() -> Deferred[None]:
        """Let go of the blob (idempotent)."""


class IBlobStore(Interface):
    """Bytes under keys like 'originals/ab/cd/<hash>/<generation>'.

    Every method returns a Deferred and never blocks the reactor.
    """

    def put(key: str, data: bytes) -> Deferred[None]:
        """Store data under key atomically: a reader, or a restart after a
        crash, finds either all of it or the previous state, never a part.
        An image's key (core.keys.written_once) is one writer's: a store
        that can refuse to replace an object (S3's If-None-Match: *) fails
        with BlobExists when another write's object is there."""

    def get(key: str) -> Deferred[bytes]:
        """The bytes under key; fails with BlobNotFound if there are none."""

    def open(key: str) -> Deferred[IBlobReader]:
        """The blob under key, to read a part at a time; fails with
        BlobNotFound if there is none.  The reader sees the blob as it was
        when opened, even if it is deleted meanwhile."""

    def size(key: str) -> Deferred[int | None]:
        """The size of the whole blob under key, None if there is none
        (without reading it)."""

    def delete(key: str) -> Deferred[None]:
        """Remove key; removing a missing key is not an error."""

    def delete_prefix(prefix: str) -> Deferred[None]:
        """Remove every key below prefix (a key path, without trailing '/')."""

    def list(prefix: str) -> IKeyListing:
        """Every key below prefix, a page at a time, in no particular order
        (for consistency checks).  Listing starts with the first page."""


class IKeyListing(Interface):
    def next_page() -> Deferred[list[str]]:
        """The next keys listed; [] once every key was.  A listing that
        cannot be completed fails (StorageUnavailable): a key left out would
        look lost."""


class IStoreUpkeep(Interface):
    """The chores of a store that needs them: a store provides this beside
    IBlobStore, and the composition root and recovery use it when it does."""

    def recover() -> Deferred[int]:
        """Prepare the store at start-up and remove what interrupted writes
        of dead processes left behind; fires with the number removed."""

    def sweep() -> Deferred[int]:
        """While this process writes (the periodic sweep): remove what
        interrupted writes of dead processes left, never what a live one,
        this one included, is writing; fires with the number removed."""

    def wipe() -> Deferred[None]:
        """Remove everything (development mode)."""


async def every_key(blobs: IBlobStore, prefix: str) -> set[str]:
    """Every key below prefix, listed page by page."""
    listing = blobs.list(prefix)
    keys: set[str] = set()
    while page := await listing.next_page():
        keys.update(page)
    return keys


class Offload(Protocol):
    def __call__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]: ...


def immediate(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
    """Run work at once in the calling thread."""
    return maybeDeferred(work, *args, **kwargs)


class IEpoch(Interface):
    """The removal signal: a value every deletion changes, that a process
    may read on every request (see pymager_tx.app.rendition_cache).
    SharedEpoch (pymager_tx.adapters.cluster.epoch) shares it between the
    processes of one data directory; LocalEpoch is the fake, this process's
    own."""

    def read() -> int:
        """The value now; cheap enough for every request."""

    def bump() -> None:
        """Change the value, for every process sharing it."""


@implementer(IEpoch)
class LocalEpoch:
    """The epoch of a process that shares its store with nobody."""

    def __init__(self) -> None:
        self._value = 0

    def read(self) -> int:
        return self._value

    def bump(self) -> None:
        self._value += 1


class IRemovalFeed(Interface):
    """Deletions made by other processes, heard as they commit: what makes
    the removal signal reach other machines at once (PostgreSQL's
    LISTEN/NOTIFY: pymager_tx.adapters.sql.removal_feed).  Where there is
    none (SQLite, or NoRemovalFeed, the fake), the removal counter's poll
    alone brings them, within poll_seconds; it also stays as the safety net
    for a feed that drops a notification."""

    def start(heard: Callable[[], None]) -> None:
        """Call heard() on the reactor thread for each deletion another
        process begins from now on, and whenever some may have been missed
        (when listening begins again after a lost connection)."""

    def stop() -> Deferred[None]:
        """Stop listening; fires once the feed let go of everything."""


@implementer(IRemovalFeed)
class NoRemovalFeed:
    """Nothing is heard: the removal counter's poll brings every deletion."""

    def start(self, heard: Callable[[], None]) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)


class ICachePurger(Interface):
    """A CDN in front of the service, told to forget every answer tagged
    with an image's ID once the image is deleted or replaced
    (pymager_tx.adapters.cdn); NoCachePurger, the default, tells nobody."""

    def purge(image_id: str) -> None:
        """Ask for the purge in the background: never blocks, never fails
        the caller."""

    def stop() -> Deferred[object]:
        """Send nothing more (at shutdown); fires once nothing is under way."""


@implementer(ICachePurger)
class NoCachePurger:
    def purge(self, image_id: str) -> None:
        pass

    def stop(self) -> Deferred[object]:
        return succeed(None)


class IPeers(Interface):
    """Peer liveness: the other processes sharing this service's database
    and storage.  A process names itself in the rows it holds (pending
    uploads, derivation claims) and asks whether the holder of a row is
    alive.  pymager_tx.app.peers.Peers provides it from a liveness function
    (the flock adapter's, pymager_tx.adapters.cluster.owners), and
    Peers.alone() is the fake."""

    me: str
    # For waiting on peers and renewing claims; None where nothing waits.
    timer: IReactorTime | None
    # How long a derivation claim holds without renewal.
    lease: timedelta

    def alive(owner: str | None) -> Deferred[bool]:
        """Whether the process named owner runs; None names no process."""


class IMetadataStore(Interface):
    """The metadata: originals, renditions, claims, as named transactions.

    Each method runs one whole transaction off the reactor and returns a
    Deferred of plain values; each destructive one is conditional on the
    state its caller decided from (status, generation, token)."""

    def ping() -> Deferred[None]:
        """Fails unless the database answers a query."""

    def answered_within(seconds: float) -> bool:
        """Whether a transaction committed in the last seconds, none having
        failed for want of the database since: a health check then needs no
        query, however long the queue for the database's threads is."""

    def find_original(image_id: str) -> Deferred[OriginalRecord | None]:
        """The ready original under image_id."""

    def row_state(image_id: str) -> Deferred[RowState | None]:
        """The row holding image_id, whatever its status."""

    def claim_original(record: OriginalRecord, owner: str) -> Deferred[None]:
        """Insert record as pending, held by owner; ImageIdTaken if the ID is taken."""

    def mark_original_ready(image_id: str, generation: str, now: datetime) -> Deferred[bool]:
        """Mark this pending upload ready; False if it is not pending any more."""

    def begin_removal(image_id: str, now: datetime, owner: str | None = None) -> Deferred[Removal | None]:
        """Mark the original under image_id (ready or being deleted) as being deleted by owner."""

    def resume_removal(image_id: str, generation: str) -> Deferred[Removal | None]:
        """What is left to remove of this upload's interrupted deletion, if it still is one."""

    def forget_lost_original(
        image_id: str, generation: str, now: datetime, owner: str | None = None
    ) -> Deferred[Removal | None]:
        """Mark this ready upload, whose file is lost, as being deleted."""

    def abandon_upload(
        image_id: str, generation: str, now: datetime, owner: str | None = None
    ) -> Deferred[Removal | None]:
        """Mark this pending upload as being deleted, if it is still pending."""

    def forget_original(image_id: str, generation: str) -> Deferred[None]:
        """Delete this upload's row once it is being deleted."""

    def unfinished() -> Deferred[list[RowState]]:
        """Uploads and deletions under way or interrupted, read in one statement."""

    def removal_count() -> Deferred[int]:
        """How many deletions have begun, ever."""

    def lookup_derived(image_id: str, variant: str) -> Deferred[DerivedLookup]:
        """The ready original under image_id and its rendition variant."""

    def record_derived(record: DerivedRecord, generation: str, claim: Claim) -> Deferred[Recorded]:
        """Record a rendition stored under claim, if claim still holds and its original is ready."""

    def forget_derived(record: DerivedRecord) -> Deferred[None]:
        """Delete the row of record, and no newer row of the same rendition."""

    def forget_derived_key(blob_key: str) -> Deferred[None]:
        """Delete the rendition row naming blob_key."""

    def claim_derivation(
        image_id: str, variant: str, generation: str, owner: str, token: str, lease: timedelta
    ) -> Deferred[tuple[ClaimOutcome, Claim | None]]:
        """Claim a rendition's derivation for lease (by the database's clock)."""

    def renew_claim(claim: Claim, lease: timedelta) -> Deferred[bool]:
        """Extend claim; False if it was lost."""

    def release_claim(claim: Claim) -> Deferred[None]:
        """End claim, if it is still this very claim."""

    def claims() -> Deferred[list[Claim]]:
        """Every derivation claim."""

    def take_over_claim(claim: Claim, owner: str, lease: timedelta) -> Deferred[bool]:
        """Make a dead holder's claim owner's, keeping its token."""

    def names_blob(blob_key: str) -> Deferred[bool]:
        """Whether a row names blob_key."""

    def store_index(claim_key: Callable[[Claim], str], below: str = "") -> Deferred[StoreIndex]:
        """What should be in storage, in one snapshot: the keys that start
        with below (a shard of the store ending in "/"), or every key."""

    def count_images() -> Deferred[int]:
        """How many originals and renditions the rows name."""

    def claim_replacement(
        claim: Claim, etags: Sequence[str] | None, lease: timedelta
    ) -> Deferred[tuple[bool, Claim | None]]:
        """Claim the replacement of the ready original with one of etags
        (None: any); (False, None) if there is none, (False, holder) if
        another replacement holds the ID."""

    def swap_original(
        record: OriginalRecord, etags: Sequence[str] | None, claim: Claim, now: datetime
    ) -> Deferred[tuple[Swapped, Removal | None]]:
        """Make record the original under its ID, if claim holds and the row
        still has one of etags; the Removal lists the old upload's files."""

    def list_originals(after: str | None, limit: int) -> Deferred[list[OriginalRecord]]:
        """At most limit ready originals with IDs after `after`, in ID order."""

    def original_meta(image_id: str) -> Deferred[OriginalMeta | None]:
        """The ready original under image_id and its renditions."""

    def refocus(
        image_id: str, focal_point: FocalPoint | None, now: datetime, owner: str | None = None
    ) -> Deferred[Refocused | None]:
        """Set the ready original's focal point; when it changes, forget the
        renditions it moves (their keys returned) and count a removal."""

    def store_summary(image_id: str, generation: str, blurhash: str, dominant_color: str) -> Deferred[bool]:
        """Record the summary of this upload, stored without one."""


class Metrics:
    """What the service counts and times, for an operator's dashboards.

    The port the use cases, the adapters and HTTP record through; this base
    records nothing (tests, the command line, [metrics] enabled = false),
    and pymager_tx.adapters.metrics.prometheus records for Prometheus.  Each
    call is cheap and safe from any thread: the adapters call from their
    thread pools.  Nothing but that adapter imports prometheus_client.
    """

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """An answered request; route is its template ("/derived/<name>"),
        or "(none)" for requests refused or answered before routing."""

    def derivation(self, outcome: str, seconds: float | None = None) -> None:
        """A derivation ended: "original" or "working_copy" (derived from
        it, in seconds), "refused" (overload), "failed"."""

    def upload(self, outcome: str) -> None:
        """An upload ended: "stored", "refused" (the client's fault), "failed"."""

    def deletion(self) -> None:
        """An original and its renditions were deleted."""

    def image_queue_depth(self, depth: int) -> None:
        """Image work now waiting for an image thread."""

    def rendition_cache(self, hit: bool) -> None:
        """A rendition looked up in memory: served from it (hit) or not."""

    def disk_cache(self, hit: bool) -> None:
        """An image looked up in the local disk cache in front of the
        bucket: read from its copy (hit) or from the bucket (miss)."""

    def db_transaction(self, name: str, seconds: float, failed: bool) -> None:
        """A named database transaction ran."""

    def storage_operation(self, op: str, seconds: float, failed: bool) -> None:
        """A blob store operation ran."""

    def exposition(self) -> tuple[str, bytes] | None:
        """(content type, body) of a scrape, or None when nothing is
        recorded.  May read files: call it off the reactor."""
        return None


NO_METRICS = Metrics()


def timed(metrics: Metrics, op: str, work: Callable[..., T]) -> Callable[..., T]:
    """work, recording its duration as the blob store operation op; for the
    stores to wrap what they offload (the time counted is the operation's,
    not its wait for a thread).  A missing blob is an answer, not an error."""
    if metrics is NO_METRICS:
        return work

    def run(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            result = work(*args, **kwargs)
        except BlobNotFound:
            metrics.storage_operation(op, time.perf_counter() - started, False)
            raise
        except BaseException:
            metrics.storage_operation(op, time.perf_counter() - started, True)
            raise
        metrics.storage_operation(op, time.perf_counter() - started, False)
        return result

    return run
