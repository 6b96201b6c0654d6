"""The local disk cache in front of a bucket (a memory store here, counting
what reaches it): warm reads stay off it, copies are bounded and whole, and
deletes void them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogEvent, formatEvent
from zope.interface.verify import verifyObject

from pymager_tx.adapters.storage.disk_cache import DiskCachedBlobStore
from pymager_tx.adapters.storage.disk_cache_index import CacheBounds
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.core.errors import BlobNotFound
from pymager_tx.ports import IBlobReader, IBlobStore, IStoreUpkeep, Metrics, immediate
from tests.fakes import ManualOffload
from tests.results import failure_of, result_of

A = "originals/ab/cd/abcd/g1"
B = "derived/ab/cd/abcd/g1/100x100.jpeg.t1"
C = "derived/ab/cd/abcd/g1/800x600.png.t2"
OTHER_UPLOAD = "derived/ab/cd/abcd/g2/100x100.jpeg.t3"


class Bucket(MemoryBlobStore):
    """A memory store that counts the reads that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, key: str) -> Deferred[bytes]:
        self.reads.append(key)
        return super().get(key)

    def open(self, key: str) -> Deferred[IBlobReader]:
        self.reads.append(key)
        return super().open(key)


class Counted(Metrics):
    def __init__(self) -> None:
        self.lookups: list[bool] = []

    def disk_cache(self, hit: bool) -> None:
        self.lookups.append(hit)


def cache_of(
    bucket: IBlobStore,
    directory: Path,
    max_bytes: int = 1000,
    max_files: int = 100,
    max_item_bytes: int = 500,
    io: object = immediate,
    metrics: Metrics | None = None,
) -> DiskCachedBlobStore:
    store = DiskCachedBlobStore(
        bucket,
        directory,
        io,  # type: ignore[arg-type]
        CacheBounds(max_bytes, max_files, max_item_bytes),
        metrics or Metrics(),
    )
    if io is immediate:
        result_of(store.recover())
    return store


def read_all(reader: IBlobReader, part: int = 4) -> bytes:
    parts = []
    while chunk := result_of(reader.read(part)):
        parts.append(chunk)
    result_of(reader.close())
    return b"".join(parts)


def files_in(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file() and path.name != "lock")


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()


def test_provides_the_interfaces(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    assert verifyObject(IBlobStore, store)
    assert verifyObject(IStoreUpkeep, store)


def test_a_warm_get_does_not_reach_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    metrics = Counted()
    store = cache_of(bucket, tmp_path, metrics=metrics)
    result_of(store.put(A, b"original bytes"))
    assert result_of(store.get(A)) == b"original bytes"
    assert result_of(store.get(A)) == b"original bytes"
    assert result_of(store.get(A)) == b"original bytes"
    assert bucket.reads == [A]
    assert metrics.lookups == [False, True, True]
    assert A in store and store.size_bytes == len(b"original bytes")
    # The copy is a file of its own, whole.
    (copy,) = files_in(tmp_path)
    assert copy.read_bytes() == b"original bytes"


def test_a_streamed_read_keeps_a_copy_once_every_byte_was_read(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(bucket.put(B, b"0123456789"))
    reader = result_of(store.open(B))
    assert reader.size == 10
    assert result_of(reader.read(4)) == b"0123"
    assert B not in store  # not before the end
    assert read_all(reader) == b"456789"
    assert B in store
    warm = result_of(store.open(B))
    assert warm.size == 10
    assert read_all(warm, 3) == b"0123456789"
    assert result_of(store.get(B)) == b"0123456789"
    assert bucket.reads == [B]


@pytest.mark.parametrize("how", ["close", "skip"])
def test_a_read_that_stops_or_skips_keeps_nothing(bucket: Bucket, tmp_path: Path, how: str) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(bucket.put(B, b"0123456789"))
    reader = result_of(store.open(B))
    assert result_of(reader.read(4)) == b"0123"
    if how == "skip":
        result_of(reader.skip(2))
        assert read_all(reader) == b"6789"
    else:
        result_of(reader.close())
    assert B not in store
    assert files_in(tmp_path) == []  # no temporary file left either
    # The next whole read keeps it.
    assert read_all(result_of(store.open(B))) == b"0123456789"
    assert B in store


def test_a_copy_of_a_warm_reader_is_read_even_once_deleted(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(store.put(A, b"0123456789"))
    result_of(store.get(A))
    reader = result_of(store.open(A))
    result_of(store.delete(A))
    assert read_all(reader) == b"0123456789"
    failure_of(store.get(A)).trap(BlobNotFound)


def test_copies_are_bounded_by_bytes_least_recently_used_out_first(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path, max_bytes=25)
    for key in (A, B, C):
        result_of(bucket.put(key, key[-2:].encode() * 5))  # 10 bytes each
    result_of(store.get(A))
    result_of(store.get(B))
    result_of(store.get(A))  # A used last: B is the oldest
    result_of(store.get(C))
    assert (A in store, B in store, C in store) == (True, False, True)
    assert store.size_bytes == 20
    assert len(files_in(tmp_path)) == 2
    bucket.reads.clear()
    result_of(store.get(A))
    result_of(store.get(C))
    assert bucket.reads == []


def test_copies_are_bounded_by_count(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path, max_files=2)
    for key in (A, B, C):
        result_of(bucket.put(key, b"x"))
        result_of(store.get(key))
    assert (A in store, B in store, C in store) == (False, True, True)
    assert len(store) == len(files_in(tmp_path)) == 2


def test_larger_images_and_other_keys_are_never_kept(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path, max_item_bytes=8)
    probe = "probes/0123abcd"
    result_of(bucket.put(A, b"123456789"))
    result_of(bucket.put(probe, b"x"))
    for _ in range(2):
        assert result_of(store.get(A)) == b"123456789"
        assert read_all(result_of(store.open(A))) == b"123456789"
        assert result_of(store.get(probe)) == b"x"
    assert len(store) == 0
    assert bucket.reads == [A, A, probe] * 2


def test_before_recovery_every_read_goes_to_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    store = DiskCachedBlobStore(bucket, tmp_path, immediate, CacheBounds(1000, 10, 100))
    result_of(bucket.put(A, b"x"))
    result_of(store.get(A))
    result_of(store.get(A))
    assert bucket.reads == [A, A]
    assert not tmp_path.exists() or files_in(tmp_path) == []


def test_delete_removes_the_copy_before_the_object(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(store.put(A, b"picture"))
    result_of(store.get(A))
    seen: list[tuple[bool, list[Path]]] = []
    delete = bucket.delete

    def deleting(key: str) -> Deferred[None]:
        seen.append((key in store, files_in(tmp_path)))
        return delete(key)

    bucket.delete = deleting  # type: ignore[method-assign]
    result_of(store.delete(A))
    assert seen == [(False, [])]
    failure_of(store.get(A)).trap(BlobNotFound)


def test_delete_prefix_removes_the_copies_of_that_upload_only(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    for key in (A, B, C, OTHER_UPLOAD):
        result_of(store.put(key, b"bytes"))
        result_of(store.get(key))
    result_of(store.delete_prefix("derived/ab/cd/abcd/g1"))
    assert (A in store, B in store, C in store, OTHER_UPLOAD in store) == (True, False, False, True)
    assert len(files_in(tmp_path)) == 2
    for key in (B, C):
        failure_of(store.get(key)).trap(BlobNotFound)
    # A prefix that is no key's parent is found by a walk of the index.
    result_of(store.delete_prefix("derived/ab/cd"))
    assert OTHER_UPLOAD not in store and A in store


def test_a_copy_written_while_its_key_is_deleted_is_thrown_away(bucket: Bucket, tmp_path: Path) -> None:
    io = ManualOffload()
    store = cache_of(bucket, tmp_path, io=io)
    recovering = store.recover()
    io.run_all()
    result_of(recovering)
    result_of(bucket.put(A, b"picture"))
    assert result_of(store.get(A)) == b"picture"  # served; its copy waits for a thread
    deleting = store.delete(A)  # nothing indexed yet: straight to the bucket
    result_of(deleting)
    io.run_all()  # the copy is written, found void, removed
    assert A not in store
    assert files_in(tmp_path) == []


def test_two_reads_of_one_key_at_once_keep_one_copy(bucket: Bucket, tmp_path: Path) -> None:
    io = ManualOffload()
    store = cache_of(bucket, tmp_path, io=io)
    recovering = store.recover()
    io.run_all()
    result_of(recovering)
    result_of(bucket.put(A, b"picture"))
    result_of(bucket.put(B, b"0123456789"))
    first, second = store.get(A), store.get(A)
    assert result_of(first) == result_of(second) == b"picture"
    assert len(io.pending) == 1  # one copy being written
    streamed = [result_of(store.open(B)), result_of(store.open(B))]
    io.run_all()
    readings = [reader.read(10) for reader in streamed]
    io.run_all()
    assert [result_of(reading) for reading in readings] == [b"0123456789"] * 2
    closing = [reader.close() for reader in streamed]
    io.run_all()
    for each in closing:
        result_of(each)
    assert (A in store, B in store) == (True, True)
    assert len(files_in(tmp_path)) == 2
    # Warm now: read from the copies, at once: a small copy in the page
    # cache needs no io thread (cached_read).
    bucket.reads.clear()
    assert result_of(store.get(B)) == b"0123456789"
    assert bucket.reads == [] and io.pending == []


def test_a_copy_gone_from_disk_is_read_from_the_bucket_and_forgotten(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(store.put(A, b"picture"))
    result_of(store.get(A))
    for copy in files_in(tmp_path):
        copy.unlink()  # by hand, or evicted by the slot's own eviction meanwhile
    assert result_of(store.get(A)) == b"picture"
    assert bucket.reads == [A, A]
    assert A in store  # kept again from the bucket's answer
    assert read_all(result_of(store.open(A))) == b"picture"


def test_a_restart_finds_its_copies_and_no_temporary_file(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    for key in (A, B, C):
        result_of(bucket.put(key, b"0123456789"))
        result_of(store.get(key))
    # Copies stored long ago and lately: LRU order survives by their times.
    for age, key in enumerate((C, A, B)):
        (copy,) = [path for path in files_in(tmp_path) if path.name == key.replace("/", "+")]
        os.utime(copy, (1_000_000 + age, 1_000_000 + age))
    slot = tmp_path / "0"
    (slot / "tmp" / "tmpinterrupted").write_bytes(b"half a cop")  # a write cut by a crash
    (slot / "blobs" / "00" / "not+A+key").write_bytes(b"?")
    result_of(store.close())
    bucket.reads.clear()
    restarted = cache_of(bucket, tmp_path, max_bytes=25)  # room for two of three
    assert list(slot.joinpath("tmp").iterdir()) == []
    assert (A in restarted, B in restarted, C in restarted) == (True, True, False)
    assert restarted.size_bytes == 20
    assert len(files_in(tmp_path)) == 2
    assert result_of(restarted.get(A)) == result_of(restarted.get(B)) == b"0123456789"
    assert bucket.reads == []


def test_each_live_process_takes_a_slot_of_its_own(bucket: Bucket, tmp_path: Path) -> None:
    first, second = cache_of(bucket, tmp_path), cache_of(bucket, tmp_path)
    result_of(bucket.put(A, b"picture"))
    result_of(first.get(A))
    assert A in first and A not in second
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0", "1"]
    result_of(first.close())
    third = cache_of(bucket, tmp_path)  # the first's slot, warm
    bucket.reads.clear()
    assert result_of(third.get(A)) == b"picture"
    assert bucket.reads == []
    result_of(second.close())
    result_of(third.close())


def test_wipe_removes_every_copy(bucket: Bucket, tmp_path: Path) -> None:
    store = cache_of(bucket, tmp_path)
    result_of(store.put(A, b"picture"))
    result_of(store.get(A))
    result_of(store.wipe())
    assert len(store) == 0 and files_in(tmp_path) == []
    failure_of(store.get(A)).trap(BlobNotFound)


def test_a_disk_that_cannot_keep_copies_leaves_reads_to_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    blocked = tmp_path / "cache"
    blocked.write_bytes(b"a file where the directory should be")
    store = cache_of(bucket, blocked)
    result_of(bucket.put(A, b"picture"))
    assert result_of(store.get(A)) == result_of(store.get(A)) == b"picture"
    assert bucket.reads == [A, A]


@pytest.mark.parametrize(
    ("bounds", "kept"),
    [({"max_files": 1}, [B]), ({"max_item_bytes": 9}, []), ({"max_bytes": 9}, [])],
)
def test_a_restart_with_lower_bounds_keeps_the_newest_within_them(
    bucket: Bucket, tmp_path: Path, bounds: dict[str, int], kept: list[str]
) -> None:
    store = cache_of(bucket, tmp_path)
    for age, key in enumerate((A, B)):
        result_of(bucket.put(key, b"0123456789"))
        result_of(store.get(key))
        (copy,) = [path for path in files_in(tmp_path) if path.name == key.replace("/", "+")]
        os.utime(copy, (1_000_000 + age, 1_000_000 + age))
    result_of(store.close())
    restarted = cache_of(bucket, tmp_path, **bounds)
    assert [key for key in (A, B) if key in restarted] == kept
    assert len(files_in(tmp_path)) == len(kept)


def manual(bucket: Bucket, directory: Path, **bounds: int) -> tuple[DiskCachedBlobStore, ManualOffload]:
    io = ManualOffload()
    store = cache_of(bucket, directory, io=io, **bounds)
    recovering = store.recover()
    io.run_all()
    result_of(recovering)
    return store, io


def test_a_removal_under_way_never_takes_a_newer_copy_with_it(bucket: Bucket, tmp_path: Path) -> None:
    store, io = manual(bucket, tmp_path, max_files=1)
    result_of(bucket.put(A, b"a"))
    result_of(bucket.put(B, b"b"))
    result_of(store.get(A))
    io.run_all()
    result_of(store.get(B))
    io.run_one()  # B's copy written: A evicted, its removal waiting for a thread
    assert (A in store, B in store) == (False, True)
    assert len(io.pending) == 1
    result_of(store.get(A))  # read again at once: no copy begun while A's is removed
    assert len(io.pending) == 1
    io.run_all()
    result_of(store.get(A))  # now it is kept (and B evicted)
    io.run_all()
    assert (A in store, B in store) == (True, False)
    assert [path.name for path in files_in(tmp_path)] == [A.replace("/", "+")]


def test_a_copy_written_during_a_wipe_goes_and_one_written_during_a_close_stays(
    bucket: Bucket, tmp_path: Path
) -> None:
    store, io = manual(bucket, tmp_path)
    result_of(bucket.put(A, b"a"))
    result_of(store.get(A))  # its copy waits for a thread
    wiping = store.wipe()
    io.run_one(1)  # the wipe first, then the copy
    io.run_all()
    result_of(wiping)
    assert len(store) == 0 and files_in(tmp_path) == []
    result_of(bucket.put(A, b"a"))
    result_of(store.get(A))
    closing = store.close()
    io.run_all()
    result_of(closing)
    # Whole, so the next process to take the slot counts it.
    assert [path.read_bytes() for path in files_in(tmp_path)] == [b"a"]
    assert A in cache_of(bucket, tmp_path)


def test_a_key_voided_while_copied_is_not_copied_again_until_that_copy_is_gone(
    bucket: Bucket, tmp_path: Path
) -> None:
    store, io = manual(bucket, tmp_path)
    result_of(store.put(A, b"first"))
    result_of(store.get(A))  # copy 1 waits for a thread
    result_of(store.put(A, b"first"))  # a put voids it (keys are never rewritten: the same bytes)
    result_of(store.get(A))
    assert len(io.pending) == 1  # no second copy while the first is under way
    io.run_all()
    assert A not in store and files_in(tmp_path) == []
    result_of(store.get(A))
    io.run_all()
    assert A in store


def test_a_disk_that_fails_copies_is_said_once_and_serving_goes_on(
    bucket: Bucket, tmp_path: Path, log_events: list[LogEvent]
) -> None:
    store = cache_of(bucket, tmp_path)
    del log_events[:]  # what start-up said
    temporary = tmp_path / "0" / "tmp"
    temporary.rmdir()
    temporary.write_bytes(b"")  # every copy now fails, as on a full disk
    for key in (A, B, C):
        result_of(bucket.put(key, b"0123456789"))
    assert result_of(store.get(A)) == b"0123456789"
    assert read_all(result_of(store.open(B))) == b"0123456789"
    assert len(store) == 0
    said = [formatEvent(event) for event in log_events]
    assert len(said) == 1 and said[0].startswith(f"Could not keep a copy of {A} on local disk"), said
    temporary.unlink()
    temporary.mkdir()
    result_of(store.get(C))
    assert C in store
    said = [formatEvent(event) for event in log_events]
    assert said[1:] == ["Keeping copies on local disk again"]


def test_copies_under_way_are_bounded(bucket: Bucket, tmp_path: Path) -> None:
    io = ManualOffload()
    store = DiskCachedBlobStore(bucket, tmp_path, io, CacheBounds(1000, 100, 100, max_fills=2))
    recovering = store.recover()
    io.run_all()
    result_of(recovering)
    keys = [f"originals/ab/cd/abcd/g{number}" for number in range(3)]
    for key in keys:
        result_of(bucket.put(key, b"x"))
        assert result_of(store.get(key)) == b"x"  # served whether copied or not
    assert len(io.pending) == 2
    io.run_all()
    assert [key in store for key in keys] == [True, True, False]


def test_the_sweep_is_the_buckets(tmp_path: Path) -> None:
    class Swept(Bucket):
        def sweep(self) -> Deferred[int]:
            return succeed(3)

    assert result_of(cache_of(Swept(), tmp_path).sweep()) == 3
