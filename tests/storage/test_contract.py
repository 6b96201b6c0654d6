"""One contract, every blob store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from pymager_tx.adapters.storage.disk_cache import DiskCachedBlobStore
from pymager_tx.adapters.storage.disk_cache_index import CacheBounds
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.adapters.storage.s3 import S3BlobStore
from pymager_tx.core.errors import BlobNotFound, StorageUnavailable
from pymager_tx.ports import IBlobStore, IStoreUpkeep, immediate
from tests.conftest import S3Server
from tests.results import failure_of, result_of


@pytest.fixture(params=["filesystem", "memory", "disk cache", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IBlobStore]:
    if request.param == "disk cache":
        # Copies of what is read, in front of a store: the contract holds
        # whether a read finds a copy or not.
        bounds = CacheBounds(1024, 16, 64)
        made: IBlobStore = DiskCachedBlobStore(MemoryBlobStore(), tmp_path / "cache", immediate, bounds)
    elif request.param == "filesystem":
        made = FilesystemBlobStore(tmp_path / "files", immediate)
    elif request.param == "s3":
        # Each test under a prefix of its own, in the session's bucket.
        server: S3Server = request.getfixturevalue("s3_server")
        made = S3BlobStore.from_settings(server.settings(prefix=f"t-{uuid4().hex[:12]}"), immediate)
    else:
        made = MemoryBlobStore()
    result_of(IStoreUpkeep(made).recover())
    yield made
    if request.param == "s3":
        result_of(IStoreUpkeep(made).wipe())


KEY = "originals/ab/cd/abcd/0123"


def test_provides_the_interface(store: IBlobStore) -> None:
    assert verifyObject(IBlobStore, store)


def test_get_returns_what_put_stored(store: IBlobStore) -> None:
    result_of(store.put(KEY, b"picture"))
    assert result_of(store.get(KEY)) == b"picture"


def test_size_tells_a_stored_key_from_a_missing_one(store: IBlobStore) -> None:
    assert result_of(store.size("originals/ab/cd/abcd/g1")) is None
    result_of(store.put("originals/ab/cd/abcd/g1", b"bytes"))
    assert result_of(store.size("originals/ab/cd/abcd/g1")) == 5
    # A prefix of stored keys is no key.
    assert result_of(store.size("originals/ab/cd/abcd")) is None
    result_of(store.delete("originals/ab/cd/abcd/g1"))
    assert result_of(store.size("originals/ab/cd/abcd/g1")) is None


def test_a_listing_pages_through_every_key_below_the_prefix_once(store: IBlobStore) -> None:
    wanted = {f"derived/ab/cd/abcd/g1/{n}x{n}.jpeg" for n in range(1, 251)}
    for key in [*wanted, "derived/ab/cd/abce/g1/1x1.jpeg", "originals/ab/cd/abcd/g1"]:
        result_of(store.put(key, b"x"))
    listing = store.list("derived/ab/cd/abcd")
    pages = []
    while page := result_of(listing.next_page()):
        pages.append(page)
    listed = [key for page in pages for key in page]
    assert sorted(listed) == sorted(wanted)
    assert result_of(listing.next_page()) == []
    assert result_of(store.list("derived/zz").next_page()) == []


def test_open_reads_a_blob_a_part_at_a_time_even_once_deleted(store: IBlobStore) -> None:
    result_of(store.put(KEY, b"0123456789"))
    reader = result_of(store.open(KEY))
    assert reader.size == 10
    result_of(store.delete(KEY))
    parts = [result_of(reader.read(4)) for _ in range(4)]
    assert parts == [b"0123", b"4567", b"89", b""]
    result_of(reader.close())
    failure_of(store.open(KEY)).trap(BlobNotFound)


def test_a_reader_skips_bytes_without_reading_them(store: IBlobStore) -> None:
    result_of(store.put(KEY, b"0123456789"))
    reader = result_of(store.open(KEY))
    result_of(reader.skip(3))
    assert result_of(reader.read(2)) == b"34"
    result_of(reader.skip(0))
    result_of(reader.skip(2))
    assert result_of(reader.read(10)) == b"789"
    result_of(reader.skip(5))  # past the end: at the end
    assert result_of(reader.read(1)) == b""
    result_of(reader.close())
    past = result_of(store.open(KEY))
    result_of(past.skip(50))
    assert result_of(past.read(4)) == b""
    result_of(past.close())


def test_get_of_a_missing_key_fails(store: IBlobStore) -> None:
    failure_of(store.get(KEY)).trap(BlobNotFound)


def test_put_replaces_what_is_no_image(store: IBlobStore) -> None:
    # An image's key is written once (the S3 store refuses to replace it
    # where the bucket honours conditional writes: tests/storage/test_s3.py).
    result_of(store.put("probes/p", b"first"))
    result_of(store.put("probes/p", b"second"))
    assert result_of(store.get("probes/p")) == b"second"


def test_delete_removes_and_is_idempotent(store: IBlobStore) -> None:
    result_of(store.put(KEY, b"picture"))
    result_of(store.delete(KEY))
    result_of(store.delete(KEY))
    failure_of(store.get(KEY)).trap(BlobNotFound)


def test_delete_prefix_removes_only_below_the_prefix(store: IBlobStore) -> None:
    result_of(store.put("derived/ab/cd/abcd/g1/100x100.jpeg", b"a"))
    result_of(store.put("derived/ab/cd/abcd/g1/800x600.png", b"b"))
    result_of(store.put("derived/ab/cd/abcd/g2/100x100.jpeg", b"c"))
    result_of(store.put("derived/ab/cd/abcd/g10/100x100.jpeg", b"d"))
    result_of(store.delete_prefix("derived/ab/cd/abcd/g1"))
    failure_of(store.get("derived/ab/cd/abcd/g1/100x100.jpeg")).trap(BlobNotFound)
    failure_of(store.get("derived/ab/cd/abcd/g1/800x600.png")).trap(BlobNotFound)
    assert result_of(store.get("derived/ab/cd/abcd/g2/100x100.jpeg")) == b"c"
    assert result_of(store.get("derived/ab/cd/abcd/g10/100x100.jpeg")) == b"d"
    result_of(store.delete_prefix("derived/ab/cd/abcd/g1"))


def test_wipe_removes_everything(store: IBlobStore) -> None:
    result_of(store.put(KEY, b"picture"))
    result_of(IStoreUpkeep(store).wipe())
    failure_of(store.get(KEY)).trap(BlobNotFound)
    result_of(store.put(KEY, b"again"))
    assert result_of(store.get(KEY)) == b"again"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../etc/passwd",
        "/absolute",
        "originals/../../x",
        "a//b",
        "a/",
        "A/b",
        "a/.hidden",
        ".tmp/x",
        "a\\b",
        "a/b\x00",
    ],
)
def test_refuses_keys_that_could_escape_or_collide(store: IBlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)


class TestFilesystem:
    def test_recover_removes_what_a_crashed_write_left(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, immediate)
        result_of(store.recover())
        (tmp_path / ".tmp" / "put-crashed").write_bytes(b"half an ima")
        assert result_of(store.recover()) == 1
        assert list((tmp_path / ".tmp").iterdir()) == []

    def test_a_failed_write_leaves_neither_the_key_nor_a_temporary_file(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, immediate)
        result_of(store.recover())
        # A plain file where a directory of the key must go makes the
        # rename into place fail after the data was written.
        (tmp_path / "originals").write_bytes(b"in the way")
        failure: Deferred[None] = store.put(KEY, b"picture")
        failure_of(failure).trap(StorageUnavailable)
        assert list((tmp_path / ".tmp").iterdir()) == []

    def test_files_live_under_the_key_and_nothing_else_is_left(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, immediate)
        result_of(store.recover())
        result_of(store.put(KEY, b"picture"))
        assert (tmp_path / KEY).read_bytes() == b"picture"
        assert list((tmp_path / ".tmp").iterdir()) == []

    def test_delete_prefix_prunes_the_empty_image_directory(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, immediate)
        result_of(store.recover())
        result_of(store.put("derived/ab/cd/abcd/g1/100x100.jpeg", b"a"))
        result_of(store.delete_prefix("derived/ab/cd/abcd/g1"))
        assert not (tmp_path / "derived/ab/cd/abcd").exists()


class TestFilesystemSweep:
    def test_the_sweep_removes_only_what_processes_that_are_gone_were_writing(self, tmp_path: Path) -> None:
        alive = {"me", "live"}
        store = FilesystemBlobStore(tmp_path, immediate, "me", lambda name: name in alive)
        result_of(store.recover())
        temporaries = tmp_path / ".tmp"
        for owner in ("me", "live", "gone"):
            (temporaries / owner).mkdir(exist_ok=True)
            (temporaries / owner / "put-under-way").write_bytes(b"half an ima")
        (temporaries / "put-loose").write_bytes(b"an older release's")
        assert result_of(store.sweep()) == 1
        assert sorted(path.name for path in temporaries.iterdir()) == ["live", "me", "put-loose"]
        assert (temporaries / "me" / "put-under-way").exists()  # this process writes it now
        alive.discard("live")
        assert result_of(store.sweep()) == 1
        assert sorted(path.name for path in temporaries.iterdir()) == ["me", "put-loose"]

    def test_a_store_alone_sweeps_nothing(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, immediate)
        result_of(store.recover())
        (tmp_path / ".tmp" / "put-under-way").write_bytes(b"half")
        assert result_of(store.sweep()) == 0
        assert (tmp_path / ".tmp" / "put-under-way").exists()
