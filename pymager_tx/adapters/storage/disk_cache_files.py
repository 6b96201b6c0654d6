"""
The files of a process's disk cache (pymager_tx.adapters.storage.disk_cache):
one slot, <root>/<n>/, per running process, taken with a flock on
<root>/<n>/lock that the kernel drops when the process ends however it ends.
A process started later takes the first free slot, so a restarted node finds
its cache warm, and no two live processes ever write one slot: each keeps its
own index and bounds without asking the others.

In a slot, blobs/<xx>/<name> holds the bytes of one key (xx: two hex digits
of the key's hash, so 256 directories made once and never pruned; name: the
key with "/" written "+", which no key holds).  A copy is written to tmp/,
fsynced, then renamed into place: a crash at any moment leaves either the
whole copy or none under the name, and only temporary files in tmp/, which
taking the slot removes.

Every function here blocks: call them on a thread pool.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pymager_tx.core.keys import validate_key

_LOCK = "lock"
_BLOBS = "blobs"
_TEMPORARY = "tmp"
# Past this many slots (processes on one node at once), a process runs
# without a disk cache rather than search on.
MAX_SLOTS = 256
# A file name may be 255 bytes on every filesystem in use; keys longer
# than this are not kept (none of the service's keys is near it).
_MAX_NAME = 240


@dataclass(frozen=True)
class Found:
    """A copy found in the slot when it was taken."""

    key: str
    size: int
    stored_at: float


class Slot:
    """One process's directory of the node's cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory: Path | None = None
        self._lock: int | None = None

    def take(self) -> bool:
        """Take the first free slot; False if every one is held."""
        self.root.mkdir(parents=True, exist_ok=True)
        for number in range(MAX_SLOTS):
            directory = self.root / str(number)
            directory.mkdir(exist_ok=True)
            descriptor = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            self._lock, self.directory = descriptor, directory
            return True
        return False

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def recount(self) -> list[Found]:
        """Remove what interrupted writes left, and every copy that is not a
        key's; the copies kept, oldest first (by when they were stored)."""
        directory = self._taken()
        temporary = directory / _TEMPORARY
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        found: list[Found] = []
        for shard in range(256):
            below = directory / _BLOBS / f"{shard:02x}"
            below.mkdir(parents=True, exist_ok=True)
            with os.scandir(below) as entries:
                for entry in entries:
                    key = _key_of(entry.name)
                    if key is None or not entry.is_file(follow_symlinks=False):
                        _remove_any(Path(entry.path))
                        continue
                    status = entry.stat(follow_symlinks=False)
                    found.append(Found(key, status.st_size, status.st_mtime))
        found.sort(key=lambda each: each.stored_at)
        return found

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("ascii")).hexdigest()
        return self._taken() / _BLOBS / digest[:2] / key.replace("/", "+")

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> tuple[BinaryIO, int]:
        """The copy of key, open, and its size."""
        file = self.path(key).open("rb")
        try:
            return file, os.fstat(file.fileno()).st_size
        except BaseException:
            file.close()
            raise

    def remove(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self.path(key).unlink()

    def store(self, key: str, data: bytes) -> None:
        """Keep a copy of data under key, whole or not at all."""
        copy = self.begin()
        try:
            copy.write(data)
        except BaseException:
            copy.abandon()
            raise
        copy.commit(key)

    def begin(self) -> Copy:
        """A copy to write a part at a time, then commit or abandon."""
        return Copy(self)

    def clear(self) -> None:
        """Remove every copy of every slot (the store was wiped): another
        process's index then names copies that are gone, which it reads as
        misses."""
        if not self.root.is_dir():
            return
        for directory in self.root.iterdir():
            if directory.name.isdigit():
                shutil.rmtree(directory / _BLOBS, ignore_errors=True)
                (directory / _BLOBS).mkdir(exist_ok=True)
                for shard in range(256):
                    (directory / _BLOBS / f"{shard:02x}").mkdir(exist_ok=True)

    def _taken(self) -> Path:
        if self.directory is None:
            raise RuntimeError("no slot taken")
        return self.directory


class Copy:
    """A copy being written to a temporary file of the slot."""

    def __init__(self, slot: Slot) -> None:
        self._slot = slot
        self._file: BinaryIO | None = None
        self._name = ""
        self.written = 0

    def write(self, part: bytes) -> None:
        if self._file is None:
            descriptor, self._name = tempfile.mkstemp(dir=self._slot._taken() / _TEMPORARY)
            self._file = os.fdopen(descriptor, "wb")
        self._file.write(part)
        self.written += len(part)

    def commit(self, key: str) -> None:
        """Make the copy key's: fsynced first, so that a power cut never
        leaves a name over bytes that were not all written."""
        if self._file is None:
            self.write(b"")
        file = self._file
        assert file is not None
        try:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.rename(self._name, self._slot.path(key))
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        if self._file is not None:
            with suppress(OSError):
                self._file.close()
            with suppress(FileNotFoundError):
                os.unlink(self._name)
            self._file = None


def fits(key: str) -> bool:
    """Whether key can be kept (its file name is short enough)."""
    return len(key) <= _MAX_NAME


def _key_of(name: str) -> str | None:
    key = name.replace("+", "/")
    try:
        return validate_key(key)
    except ValueError:
        return None


def _remove_any(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()
