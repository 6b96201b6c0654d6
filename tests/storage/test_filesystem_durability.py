"""What the filesystem store syncs to disk on a put: the contents always;
the name (the rename, the directories made for it) only for what cannot be
made again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymager_tx.adapters.storage import filesystem
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.ports import immediate
from tests.results import result_of

ORIGINAL = "originals/ab/cd/abcd/0123"
RENDITION = "derived/ab/cd/abcd/0123/100x100.jpeg.token"


@pytest.fixture
def synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each fsync synced, in order: "file", or the directory's path below the root."""
    calls: list[str] = []
    root = tmp_path / "files"
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        calls.append("file")
        real_fsync(descriptor)

    def fsync_directory(directory: Path) -> None:
        calls.append(str(directory.relative_to(root)))
        # Count it once: the real one calls os.fsync too.
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            real_fsync(descriptor)
        finally:
            os.close(descriptor)

    monkeypatch.setattr(filesystem.os, "fsync", fsync)
    monkeypatch.setattr(filesystem, "_fsync_directory", fsync_directory)
    return calls


def store_at(tmp_path: Path) -> FilesystemBlobStore:
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    return store


def test_an_original_is_synced_with_its_name_and_new_directories(tmp_path: Path, synced: list[str]) -> None:
    store = store_at(tmp_path)
    synced.clear()
    result_of(store.put(ORIGINAL, b"picture"))
    assert synced == ["file", ".", "originals", "originals/ab", "originals/ab/cd", "originals/ab/cd/abcd"]
    assert (store.root / ORIGINAL).read_bytes() == b"picture"


def test_a_rendition_is_synced_but_not_its_name(tmp_path: Path, synced: list[str]) -> None:
    """A power failure may take a rendition's name, never leave it on half
    a file; a rendition whose file is gone is derived again."""
    store = store_at(tmp_path)
    synced.clear()
    result_of(store.put(RENDITION, b"thumbnail"))
    assert synced == ["file"]
    assert (store.root / RENDITION).read_bytes() == b"thumbnail"
