"""`pymager-admin check --repair`, run as a program, on a store it cannot
list in full: it must stop rather than take unlisted files for lost ones,
and leave alone the names in the store that cannot be keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from pymager_tx.adapters.sql.database import Database, make_engine, sqlite_url
from pymager_tx.adapters.sql.originals_txn import find_original_txn
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.admin.cli import main
from pymager_tx.app.service import ImageService
from pymager_tx.core.model import ImageId
from pymager_tx.ports import immediate
from tests.images import jpeg
from tests.results import result_of
from tests.unit.test_service import POLICY

# Run as root, a process reads directories whatever their mode: the check
# runs without the two capabilities that allow it (dropped from the bounding
# set, so the program it executes never gets them), as a service user would.
_WITHOUT_OVERRIDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
CANNOT_DROP = 77
for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
    if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
        sys.exit(CANNOT_DROP)  # no CAP_SETPCAP here (a restricted container)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
_CANNOT_DROP = 77


class Store:
    """A data directory with its SQLite database, as the service leaves it."""

    def __init__(self, data: Path) -> None:
        self.data = data
        assert main(["db", "upgrade", "--data-dir", str(data)]) == 0
        self.database = Database(make_engine(sqlite_url(data / "pymager.sqlite3"), pool_size=1), immediate)
        self.blobs = FilesystemBlobStore(data / "files", immediate)
        result_of(self.blobs.recover())
        self.service = ImageService(self.database, self.blobs, immediate, POLICY)

    def upload(self, image_id: str) -> Path:
        """The file of a new original."""
        record = result_of(Deferred.fromCoroutine(self.service.store_original(ImageId(image_id), jpeg())))
        return self.blobs.root / record.blob_key

    def has_original(self, image_id: str) -> bool:
        return result_of(self.database.read(find_original_txn, image_id)) is not None

    def check(self, *options: str, as_a_user: bool = False) -> subprocess.CompletedProcess[str]:
        """Run pymager-admin check; as_a_user: without root's reading of any directory."""
        arguments = ["-m", "pymager_tx.admin.cli", "check", *options, "--data-dir", str(self.data)]
        if as_a_user and os.geteuid() == 0:
            arguments = ["-c", _WITHOUT_OVERRIDE, *arguments]
        return subprocess.run(
            [sys.executable, *arguments], capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "data")
    yield store
    store.database.engine.dispose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="drops Linux capabilities")
def test_a_directory_it_cannot_list_stops_the_repair(store: Store) -> None:
    kept = store.upload("kept")
    unreadable = store.upload("unreadable")
    originals = store.blobs.root / "originals"
    shard = originals / unreadable.relative_to(originals).parts[0]
    assert shard not in kept.parents
    shard.chmod(0)
    try:
        checked = store.check("--repair", as_a_user=True)
    finally:
        shard.chmod(0o755)

    if checked.returncode == _CANNOT_DROP:
        pytest.skip("this root cannot drop the capabilities that let it read any directory")
    assert checked.returncode == 1
    assert checked.stdout == ""
    assert checked.stderr == (
        f"pymager-admin: the image storage cannot be listed; try again later "
        f"(cannot list {shard}: Permission denied)\n"
    )
    # Nothing was forgotten: both originals are whole, and the store consistent.
    assert store.has_original("unreadable") and unreadable.exists()
    assert store.has_original("kept") and kept.exists()
    assert store.check().returncode == 0


def test_names_that_cannot_be_keys_are_left_alone_by_the_repair(store: Store) -> None:
    original = store.upload("photo")
    silly = original.parent / ".nfs0000000001a2b3c400000001"
    silly.write_bytes(b"a file deleted while another client holds it open")
    orphan = original.parent / "0123"
    orphan.write_bytes(b"a file no row refers to")

    repaired = store.check("--repair")

    assert (repaired.returncode, repaired.stderr) == (0, ""), repaired.stderr
    assert repaired.stdout.splitlines()[-1] == "repaired"
    assert silly.exists() and original.exists() and not orphan.exists()
    assert store.has_original("photo")
