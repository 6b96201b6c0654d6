"""
Compare the metadata with the stored files, and repair what disagrees.

Safe while the service runs: what a live process holds (a pending upload, a
claimed derivation) is left to it, and a file that looks orphaned is checked
against the database again after the listing, so an upload or derivation
that finished meanwhile is not taken for garbage.  At worst a repair races a
new derivation of the same rendition, which is then derived again.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.db.database import Database
from pymager_tx.db.repository import (
    Claim,
    StoreIndex,
    forget_derived_key_txn,
    store_index_txn,
    unfinished_txn,
)
from pymager_tx.errors import BlobNotFound, ImageNotFound
from pymager_tx.model import ImageId, OriginalStatus
from pymager_tx.peers import Peers
from pymager_tx.service import ImageService
from pymager_tx.storage import IBlobStore
from pymager_tx.storage.keys import derived_key

T = TypeVar("T")
log = Logger()
_TOP_LEVELS = ("originals", "derived")


@dataclass
class Report:
    orphan_files: list[str] = field(default_factory=list)  # files no row refers to
    missing_originals: list[str] = field(default_factory=list)  # IDs of ready rows without a file
    missing_derived: list[str] = field(default_factory=list)  # keys of derived rows without a file
    unfinished: list[str] = field(default_factory=list)  # IDs left pending or deleting by dead processes
    dead_claims: list[str] = field(default_factory=list)  # derivations claimed by dead processes

    @property
    def consistent(self) -> bool:
        return not any(vars(self).values())

    def lines(self) -> list[str]:
        described = [
            ("orphan file", self.orphan_files),
            ("original without its file", self.missing_originals),
            ("derived image without its file", self.missing_derived),
            ("unfinished upload or deletion", self.unfinished),
            ("claim of a dead process", self.dead_claims),
        ]
        return [f"{what}: {item}" for what, items in described for item in items]


def _claim_key(claim: Claim) -> str:
    return derived_key(ImageId(claim.image_id), claim.generation, claim.variant)


async def check(database: Database, blobs: IBlobStore, peers: Peers) -> Report:
    report = Report()
    before = await database.read(store_index_txn, _claim_key)
    stored: set[str] = set()
    for top in _TOP_LEVELS:
        stored.update(await blobs.keys(top))
    after = await database.read(store_index_txn, _claim_key)
    for key in sorted(stored):
        if not after.references(key) and not await _claimed_by_the_living(after, key, peers):
            report.orphan_files.append(key)
    for key, image_id in sorted(before.ready_originals.items()):
        if key not in stored and key in after.ready_originals:
            report.missing_originals.append(image_id)
    for key in sorted(before.derived):
        if key not in stored and key in after.derived:
            report.missing_derived.append(key)
    for removal in await database.read(unfinished_txn):
        pending = removal.original.status is OriginalStatus.PENDING
        if not (pending and await peers.alive(removal.owner)):
            report.unfinished.append(removal.original.image_id)
    for key, claim in sorted(after.claimed.items()):
        if not await peers.alive(claim.owner):
            report.dead_claims.append(key)
    return report


async def _claimed_by_the_living(index: StoreIndex, key: str, peers: Peers) -> bool:
    claim = index.claimed.get(key)
    return claim is not None and await peers.alive(claim.owner)


async def repair(report: Report, service: ImageService, database: Database, blobs: IBlobStore) -> None:
    """Make storage and metadata agree again.  Unfinished work and dead
    claims are finished as start-up recovery does; a lost original is
    forgotten, so its ID can be uploaded again; a lost derived image is
    forgotten, so it is derived again when asked for."""
    await service.recover()
    for key in report.orphan_files:
        log.info("Removing orphan file {key}", key=key)
        await blobs.delete(key)
    for image_id in report.missing_originals:
        log.warn("Forgetting original {image_id}, whose file is lost", image_id=image_id)
        with suppress(ImageNotFound):  # deleted meanwhile
            await service.delete_original(ImageId(image_id))
    for key in report.missing_derived:
        try:
            await blobs.get(key)
        except BlobNotFound:
            log.info("Forgetting derived image {key}, whose file is lost", key=key)
            await database.transact(forget_derived_key_txn, key)


def check_store(
    database: Database, blobs: IBlobStore, service: ImageService, peers: Peers, repairing: bool
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
