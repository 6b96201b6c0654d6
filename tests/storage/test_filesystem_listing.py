"""What the filesystem store lists as its keys: nothing that cannot be one."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred

from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.core.errors import StorageUnavailable
from pymager_tx.ports import every_key, immediate
from tests.results import failure_of, result_of

KEY = "originals/ab/cd/abcd/0123"


def test_names_that_cannot_be_keys_are_not_listed(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    result_of(store.put(KEY, b"picture"))
    directory = store.root / "originals" / "ab" / "cd" / "abcd"
    # An NFS client's silly rename of a file deleted while open, a hidden
    # directory with a file inside, a name in capitals, one not in UTF-8.
    (directory / ".nfs0000000001a2b3c400000001").write_bytes(b"held open elsewhere")
    (directory / ".hidden").mkdir()
    (directory / ".hidden" / "0456").write_bytes(b"not ours")
    (directory / "Backup").write_bytes(b"not ours")
    (directory / b"caf\xe9".decode("utf-8", "surrogateescape")).write_bytes(b"not ours")

    assert sorted(result_of(Deferred.fromCoroutine(every_key(store, "originals")))) == [KEY]


def test_keys_below_a_symlinked_directory_are_listed(tmp_path: Path) -> None:
    # An operator moved a shard to another disk and linked it back: get()
    # reads through the link, so the listing must see what is there too.
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    result_of(store.put(KEY, b"picture"))
    shard = store.root / "originals" / "ab"
    moved = tmp_path / "other-disk" / "ab"
    moved.parent.mkdir()
    shard.rename(moved)
    shard.symlink_to(moved)

    assert result_of(store.get(KEY)) == b"picture"
    assert sorted(result_of(Deferred.fromCoroutine(every_key(store, "originals")))) == [KEY]


def test_a_symbolic_link_back_up_the_tree_fails_the_listing(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    result_of(store.put(KEY, b"picture"))
    loop = store.root / "originals" / "ab" / "cd" / "loop"
    loop.symlink_to(store.root / "originals" / "ab")

    failure = failure_of(Deferred.fromCoroutine(every_key(store, "originals")))

    assert failure.check(StorageUnavailable)
    assert failure.value.reason == f"cannot list {loop}: a symbolic link leads to it again"
