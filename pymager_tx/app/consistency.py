"""
Compare the metadata with the stored files, and repair what disagrees.

Safe while the service runs: what a live process holds (a pending upload, a
claimed derivation) is left to it; the files are listed between two
snapshots of the database, so an upload or derivation that finished
meanwhile is not taken for garbage; and repair looks at each finding again
before it acts, acting only on the very upload (its generation) the check
saw, so a delete and re-upload in between keeps the new upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.app.service import ImageService, claimed_key
from pymager_tx.core.model import ImageId
from pymager_tx.core.records import StoreIndex
from pymager_tx.ports import IBlobStore, IMetadataStore, IPeers, every_key

T = TypeVar("T")
log = Logger()
_TOP_LEVELS = ("originals", "derived")
# Past this many images in the rows, the check goes a shard at a time: the
# 256 values of a key's first level (pymager_tx.core.keys), a 256th of the
# store each (some 40 MB of keys and rows for 10 million objects).
SHARD_ABOVE = 100_000
_SHARDS = tuple(f"{number:02x}" for number in range(256))


@dataclass(frozen=True)
class LostOriginal:
    """A ready upload whose file the listing did not find."""

    image_id: str
    generation: str
    blob_key: str

    def __str__(self) -> str:
        return self.image_id


@dataclass
class Report:
    orphan_files: list[str] = field(default_factory=list)  # files no row refers to
    missing_originals: list[LostOriginal] = field(default_factory=list)  # ready rows without a file
    missing_derived: list[str] = field(default_factory=list)  # keys of derived rows without a file
    unfinished: list[str] = field(default_factory=list)  # IDs left pending or deleting by dead processes
    dead_claims: list[str] = field(default_factory=list)  # derivations claimed by dead processes

    @property
    def consistent(self) -> bool:
        return not any(vars(self).values())

    def lines(self) -> list[str]:
        described: list[tuple[str, Sequence[object]]] = [
            ("orphan file", self.orphan_files),
            ("original without its file", self.missing_originals),
            ("derived image without its file", self.missing_derived),
            ("unfinished upload or deletion", self.unfinished),
            ("claim of a dead process", self.dead_claims),
        ]
        return [f"{what}: {item}" for what, items in described for item in items]


async def check(database: IMetadataStore, blobs: IBlobStore, peers: IPeers) -> Report:
    """Compare the database with the stored files.  A listing that fails
    fails the check (StorageUnavailable): a directory it could not read
    would otherwise make every original in it look lost.  A large store is
    compared a shard at a time (the first level of its keys): what is held
    in memory is one shard's keys and rows, not the store's."""
    report = Report()
    sharded = await database.count_images() > SHARD_ABOVE
    for top in _TOP_LEVELS:
        for shard in _SHARDS if sharded else ("",):
            await _check_shard(database, blobs, peers, f"{top}/{shard}" if shard else top, report)
    for state in await database.unfinished():
        # A live process's upload or deletion is under way, not unfinished.
        if not await peers.alive(state.owner):
            report.unfinished.append(state.image_id)
    for claim in await database.claims():
        if not await peers.alive(claim.owner):
            report.dead_claims.append(claimed_key(claim))
    report.dead_claims.sort()
    return report


async def _check_shard(
    database: IMetadataStore, blobs: IBlobStore, peers: IPeers, below: str, report: Report
) -> None:
    """The keys below `below` against the rows that name them."""
    prefix = below + "/"
    # Each index is one snapshot of the database.
    before = await database.store_index(claimed_key, prefix)
    stored = await every_key(blobs, below)
    after = await database.store_index(claimed_key, prefix)
    # A file is written only after the row or claim that names it exists,
    # and named by one writer only (storage.keys): a file listed before the
    # second snapshot that the snapshot does not name is garbage for good.
    for key in sorted(stored):
        if not after.references(key) and not await _claimed_by_the_living(after, key, peers):
            report.orphan_files.append(key)
    for key, (image_id, generation) in sorted(before.ready_originals.items()):
        if key not in stored and key in after.ready_originals:
            report.missing_originals.append(LostOriginal(image_id, generation, key))
    for key in sorted(before.derived):
        if key not in stored and key in after.derived:
            report.missing_derived.append(key)


async def _claimed_by_the_living(index: StoreIndex, key: str, peers: IPeers) -> bool:
    claim = index.claimed.get(key)
    return claim is not None and await peers.alive(claim.owner)


async def repair(report: Report, service: ImageService, database: IMetadataStore, blobs: IBlobStore) -> None:
    """Make storage and metadata agree again.  Unfinished work and dead
    claims are finished as start-up recovery does; a lost original is
    forgotten, so its ID can be uploaded again; a lost derived image is
    forgotten, so it is derived again when asked for.  Each is looked at
    again first, and forgotten only as the very upload the check saw."""
    await service.recover()
    for key in report.orphan_files:
        if await _named(database, key):
            continue
        log.info("Removing orphan file {key}", key=key)
        await blobs.delete(key)
    for lost in report.missing_originals:
        if await blobs.size(lost.blob_key) is not None:
            log.warn("The file of original {image_id} is there after all; keeping it", image_id=lost.image_id)
            continue
        if await service.forget_lost_original(ImageId(lost.image_id), lost.generation):
            log.warn("Forgot original {image_id}, whose file is lost", image_id=lost.image_id)
    for key in report.missing_derived:
        if await blobs.size(key) is None:
            log.info("Forgetting derived image {key}, whose file is lost", key=key)
            await database.forget_derived_key(key)


async def _named(database: IMetadataStore, key: str) -> bool:
    """Whether a row or a claim names key now."""
    if await database.names_blob(key):
        return True
    return any(claimed_key(claim) == key for claim in await database.claims())


def check_store(
    database: IMetadataStore, blobs: IBlobStore, service: ImageService, peers: IPeers, repairing: bool
) -> tuple[Report, Report | None]:
    """Check (and with repairing, repair then check again) a store whose
    database and blob store run their work at once (threads.immediate):
    for the command line, where blocking is fine."""
    checked = _now(Deferred.fromCoroutine(check(database, blobs, peers)))
    if not repairing or checked.consistent:
        return checked, None
    _now(Deferred.fromCoroutine(repair(checked, service, database, blobs)))
    return checked, _now(Deferred.fromCoroutine(check(database, blobs, peers)))


def _now(deferred: Deferred[T]) -> T:
    results: list[T | Failure] = []
    deferred.addBoth(results.append)
    assert results, "the check was given work that does not run at once"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
