"""
Blobs as files under a root directory.

Writes go to a unique file in <root>/.tmp, are fsynced, then renamed into
place, so a crash never leaves a truncated file under a key.  Keeping every
temporary file in one directory (on the same filesystem, so the rename stays
atomic) lets start-up recovery clean up without walking the whole store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from pymager_tx.errors import BlobNotFound
from pymager_tx.storage.interface import IBlobStore, validate_key
from pymager_tx.threads import Offload

_TEMPORARY = ".tmp"
_RENAME_ATTEMPTS = 3


@implementer(IBlobStore)
class FilesystemBlobStore:
    log = Logger()

    def __init__(self, root: Path, offload: Offload) -> None:
        self.root = root
        self._temporary = root / _TEMPORARY
        self._offload = offload

    def put(self, key: str, data: bytes) -> Deferred[None]:
        return self._offload(self._put, self._path(key), data)

    def get(self, key: str) -> Deferred[bytes]:
        return self._offload(self._get, self._path(key))

    def delete(self, key: str) -> Deferred[None]:
        return self._offload(self._delete, self._path(key))

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        return self._offload(self._delete_tree, self._path(prefix))

    def recover(self) -> Deferred[int]:
        return self._offload(self._recover)

    def wipe(self) -> Deferred[None]:
        return self._offload(self._wipe)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    # The methods below run in a pool thread.

    def _put(self, path: Path, data: bytes) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self._temporary, prefix="put-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            self._move_into_place(temporary, path)
        except BaseException:
            with suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temporary)
            raise

    def _move_into_place(self, temporary: str, path: Path) -> None:
        # A concurrent delete_prefix may remove directories on the way
        # between their creation and the rename: make them again and retry.
        for attempt in range(_RENAME_ATTEMPTS):
            try:
                self._make_directories(path.parent)
                os.replace(temporary, path)
                break
            except FileNotFoundError:
                if attempt == _RENAME_ATTEMPTS - 1:
                    raise
        # Gone already if a delete_prefix came right after the rename; the
        # writer learns that from the metadata, not from here.
        with suppress(FileNotFoundError):
            _fsync_directory(path.parent)

    def _get(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(str(path.relative_to(self.root))) from None

    def _delete(self, path: Path) -> None:
        with suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
            _fsync_directory(path.parent)
        _prune(path.parent)

    def _delete_tree(self, path: Path) -> None:
        # Writers may add files while this runs (a derivation finishing for
        # an original being deleted); errors are ignored, and such a writer
        # removes its own file once it finds the original gone.
        shutil.rmtree(path, ignore_errors=True)
        with suppress(FileNotFoundError, NotADirectoryError):
            _fsync_directory(path.parent)
        _prune(path.parent)

    def _recover(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        self._temporary.mkdir(exist_ok=True)
        leftovers = list(self._temporary.iterdir())
        for leftover in leftovers:
            with suppress(FileNotFoundError, NotADirectoryError):
                leftover.unlink()
        if leftovers:
            self.log.info(
                "Removed {count} unfinished writes from {directory}",
                count=len(leftovers),
                directory=str(self._temporary),
            )
        return len(leftovers)

    def _wipe(self) -> None:
        with suppress(FileNotFoundError, NotADirectoryError):
            shutil.rmtree(self.root)
        self._recover()

    def _make_directories(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with suppress(FileExistsError):
                new.mkdir()
            # A new directory is durable only once its parent records it.
            _fsync_directory(new.parent)


def _prune(directory: Path) -> None:
    """Remove directory if it is empty: per-image directories go with their
    last file.  The shard directories above them are few and stay."""
    with suppress(OSError):
        directory.rmdir()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
