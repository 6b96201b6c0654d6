"""A small blob the kernel holds in memory is read on the calling thread;
anything that could wait for a disk goes to the pool thread, as before."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pymager_tx.adapters.storage.cached_read import READ_HERE_BYTES, CachedReader
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.core.errors import BlobNotFound
from pymager_tx.ports import immediate
from tests.fakes import ManualOffload
from tests.results import failure_of, result_of

# openat2's RESOLVE_CACHED is Linux 5.12's; CI runs on Linux.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's openat2 and preadv2")


def stores(root: Path) -> tuple[FilesystemBlobStore, FilesystemBlobStore, ManualOffload]:
    """One store that writes at once, one over the same files whose pool
    threads the test runs by hand."""
    writer = FilesystemBlobStore(root, immediate)
    result_of(writer.recover())
    threads = ManualOffload()
    return writer, FilesystemBlobStore(root, threads), threads


def test_the_system_can_read_without_waiting() -> None:
    # The kernels CI runs on have openat2 with RESOLVE_CACHED: without it
    # every other test here would pass by taking the thread.
    assert CachedReader().available


def test_a_small_blob_in_memory_is_read_without_a_thread(tmp_path: Path) -> None:
    writer, reader, threads = stores(tmp_path)
    result_of(writer.put("derived/ab/one.jpeg", b"jpeg bytes"))  # just written: in the page cache
    assert result_of(reader.get("derived/ab/one.jpeg")) == b"jpeg bytes"
    assert threads.calls == 0


def test_an_empty_blob_in_memory_is_read_too(tmp_path: Path) -> None:
    writer, reader, threads = stores(tmp_path)
    result_of(writer.put("empty", b""))
    assert result_of(reader.get("empty")) == b""
    assert threads.calls == 0


def test_a_large_blob_goes_to_a_thread(tmp_path: Path) -> None:
    writer, reader, threads = stores(tmp_path)
    large = b"x" * (READ_HERE_BYTES + 1)
    result_of(writer.put("large", large))
    reading = reader.get("large")
    assert threads.calls == 1
    threads.run_all()
    assert result_of(reading) == large


def test_a_missing_blob_is_told_by_the_thread(tmp_path: Path) -> None:
    _, reader, threads = stores(tmp_path)
    reading = reader.get("derived/ab/none.jpeg")
    assert threads.calls == 1
    threads.run_all()
    failure_of(reading).trap(BlobNotFound)


def test_a_blob_not_in_memory_goes_to_a_thread(tmp_path: Path) -> None:
    writer, reader, threads = stores(tmp_path)
    result_of(writer.put("cold", b"cold bytes" * 100))  # fsynced: its pages are clean
    descriptor = os.open(tmp_path / "cold", os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)  # dropped from the page cache
    finally:
        os.close(descriptor)
    reading = reader.get("cold")
    assert threads.calls == 1
    threads.run_all()
    assert result_of(reading) == b"cold bytes" * 100
