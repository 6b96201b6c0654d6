"""pymager-admin check: a store broken on purpose, found out and repaired."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.originals_txn import claim_original_txn, status_of_txn
from pymager_tx.adapters.sql.renditions_txn import claims_txn, lookup_derived_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app import consistency
from pymager_tx.app.consistency import Report, check_store
from pymager_tx.app.peers import Peers
from pymager_tx.app.service import ImageService, claimed_key
from pymager_tx.core.keys import derived_key, original_key
from pymager_tx.core.model import ImageId
from pymager_tx.ports import immediate
from tests.db.test_repository import claimed as claimed_by
from tests.db.test_repository import pending
from tests.images import jpeg, opened
from tests.results import result_of
from tests.service_calls import derived_body
from tests.unit.test_service import POLICY, files, run

LIVE = "live-process"
DEAD = "dead-process"


class Store:
    def __init__(self, root: Path, database: Database) -> None:
        self.database = database
        self.blobs = FilesystemBlobStore(root, immediate)
        result_of(self.blobs.recover())
        alive = {LIVE}
        self.peers = Peers("admin", lambda owner: _fired(owner in alive), None)
        self.service = ImageService(database, self.blobs, immediate, POLICY, peers=self.peers)

    def upload(self, image_id: str) -> str:
        record = result_of(run(self.service.store_original(ImageId(image_id), jpeg((300, 200)))))
        result_of(run(derived_body(self.service, f"{image_id}-100x100.jpg")))
        return record.generation

    def check(self, repairing: bool = False) -> tuple[Report, Report | None]:
        return check_store(self.database, self.blobs, self.service, self.peers, repairing)


def _fired(value: bool) -> Deferred[bool]:
    return succeed(value)


@pytest.fixture
def store(tmp_path: Path, database: Database) -> Store:
    return Store(tmp_path / "files", database)


def test_a_sound_store_is_consistent(store: Store) -> None:
    store.upload("kept")
    report, _ = store.check()
    assert report.consistent and report.lines() == []


@pytest.mark.parametrize("sharded", [False, True])
def test_finds_and_repairs_every_kind_of_damage(
    store: Store, sharded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large store is checked a shard at a time: the same findings.
    monkeypatch.setattr(consistency, "SHARD_ABOVE", 0 if sharded else consistency.SHARD_ABOVE)
    listed: list[str] = []
    list_keys = store.blobs.list
    monkeypatch.setattr(store.blobs, "list", lambda prefix: listed.append(prefix) or list_keys(prefix))
    kept = store.upload("kept")
    lost_generation = store.upload("lost")
    thumb_lost = store.upload("thumb-lost")
    # Damage, each as a crash, a disk or an operator could cause it.
    orphan = original_key(ImageId("nobody"), "0" * 32)
    result_of(store.blobs.put(orphan, b"orphan original"))
    stray = derived_key(ImageId("kept"), kept, "800x600.jpeg")
    result_of(store.blobs.put(stray, b"stray rendition"))
    (store.blobs.root / original_key(ImageId("lost"), lost_generation)).unlink()
    thumb = result_of(store.database.read(lookup_derived_txn, "thumb-lost", "100x100.jpeg")).derived
    assert thumb is not None and thumb_lost in thumb.blob_key
    lost_thumb = thumb.blob_key
    (store.blobs.root / lost_thumb).unlink()
    record = replace(pending("stale"), blob_key=original_key(ImageId("stale"), "1" * 32))
    result_of(store.database.transact(claim_original_txn, record, DEAD))
    claimed = claimed_key(claimed_by(store.database, "kept", "20x10.jpeg", kept, DEAD))
    result_of(store.blobs.put(claimed, b"never recorded"))

    report, after = store.check()
    assert after is None
    assert sorted(report.orphan_files) == sorted([orphan, stray, claimed])
    assert [str(lost) for lost in report.missing_originals] == ["lost"]
    assert report.missing_derived == [lost_thumb]
    assert report.unfinished == ["stale"]
    assert report.dead_claims == [claimed]
    assert len(report.lines()) == 7
    # Listed a 256th of the store at a time, or each top level whole.
    assert listed == (
        [f"{top}/{shard:02x}" for top in ("originals", "derived") for shard in range(256)]
        if sharded
        else ["originals", "derived"]
    )

    report, after = store.check(repairing=True)
    assert not report.consistent
    assert after is not None and after.consistent, after.lines()
    # What was sound still is; what was lost can be uploaded or derived again.
    assert result_of(store.database.read(status_of_txn, "lost")) is None
    assert result_of(store.database.read(status_of_txn, "stale")) is None
    assert result_of(store.database.read(claims_txn)) == []
    store.upload("lost")
    again = result_of(run(derived_body(store.service, "thumb-lost-100x100.jpg")))
    assert opened(again.data or b"").size == (100, 100)
    assert orphan not in files(store.blobs)


def test_leaves_what_live_processes_hold(store: Store) -> None:
    kept = store.upload("kept")
    record = replace(pending("uploading"), blob_key=original_key(ImageId("uploading"), "2" * 32))
    result_of(store.database.transact(claim_original_txn, record, LIVE))
    result_of(store.blobs.put(record.blob_key, b"arriving"))
    deriving = claimed_key(claimed_by(store.database, "kept", "20x10.jpeg", kept, LIVE))
    result_of(store.blobs.put(deriving, b"about to be recorded"))
    report, _ = store.check(repairing=True)
    assert report.consistent, report.lines()
    assert {record.blob_key, deriving} <= set(files(store.blobs))
