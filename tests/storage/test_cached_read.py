"""A small blob the kernel holds in memory is read on the calling thread;
anything that could wait for a disk goes to the pool thread, as before."""

from __future__ import annotations

import ctypes
import mmap
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


def resident_pages(path: Path) -> int:
    """How many of the file's pages the page cache holds, by mincore(2) on a
    mapping that is never touched (mapping a file reads none of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with path.open("rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) as mapping:
        start = ctypes.c_char.from_buffer(mapping)
        try:
            vector = ctypes.create_string_buffer(pages)
            if libc.mincore(ctypes.addressof(start), size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(byte & 1 for byte in vector.raw)
        finally:
            del start  # the mapping cannot close while a ctypes view holds it


def drop_from_memory(path: Path) -> None:
    """Take the file's pages out of the page cache as far as the kernel
    lets: rewrite them with O_DIRECT (which invalidates the cached copies of
    what it writes), then advise the rest away.  Both are only attempts: a
    filesystem that lives in memory keeps its pages."""
    data = path.read_bytes()
    with mmap.mmap(-1, len(data)) as aligned:  # page-aligned, as O_DIRECT asks
        aligned.write(data)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError:
            pass  # tmpfs and others refuse O_DIRECT
        else:
            try:
                os.write(descriptor, aligned)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def test_a_blob_not_in_memory_goes_to_a_thread(tmp_path: Path) -> None:
    writer, reader, threads = stores(tmp_path)
    cold = bytes(range(256)) * 16  # one page, so that O_DIRECT can rewrite it whole
    result_of(writer.put("cold", cold))
    drop_from_memory(tmp_path / "cold")
    # Which one happened is asked, not assumed: a page the kernel kept is
    # rightly read on the calling thread.  Asked before reading: a read that
    # finds the page missing starts the kernel's readahead, which brings it back.
    in_memory = resident_pages(tmp_path / "cold") > 0
    reading = reader.get("cold")
    assert threads.calls == (0 if in_memory else 1)
    threads.run_all()
    assert result_of(reading) == cold


def test_the_residency_check_sees_pages_just_written(tmp_path: Path) -> None:
    # So that the test above cannot pass by a check that always answers 0.
    path = tmp_path / "probe"
    path.write_bytes(b"p" * 3 * mmap.PAGESIZE)
    assert resident_pages(path) == 3
