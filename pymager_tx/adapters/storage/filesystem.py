"""
Blobs as files under a root directory.

Writes go to a unique file in <root>/.tmp/<owner>, are fsynced, then renamed
into place, so a crash never leaves a truncated file under a key.  The
rename (and the directories made for it) is fsynced too, except for a
rendition's: a power failure may then take its name, never leave a name on
half a file, and a rendition whose file is gone is derived again when asked
for.  That saves a derivation two to five fsyncs.  Keeping
every temporary file of a process in one directory (on the same filesystem,
so the rename stays atomic) lets start-up recovery clean up after processes
that died without walking the whole store, and without touching the writes
of processes still running.

Failures of the filesystem itself become StorageUnavailable (StorageFull when
it has no room left), for the web layer to answer 503.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import wraps
from itertools import islice
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from pymager_tx.adapters.storage.cached_read import READ_HERE_BYTES, CachedReader
from pymager_tx.core.errors import BlobNotFound, StorageFull, StorageUnavailable
from pymager_tx.core.keys import is_derived_key, validate_key
from pymager_tx.ports import (
    NO_METRICS,
    IBlobReader,
    IBlobStore,
    IKeyListing,
    IStoreUpkeep,
    Metrics,
    Offload,
    timed,
)

_TEMPORARY = ".tmp"
_UNLISTED = "the image storage cannot be listed; try again later"
_RENAME_ATTEMPTS = 3
# Keys listed per trip to a pool thread.
_PAGE = 1000
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
P = ParamSpec("P")
T = TypeVar("T")


def _storage_errors(method: Callable[P, T]) -> Callable[P, T]:
    @wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except OSError as error:
            reason = f"{error.strerror or error} ({error.filename or 'storage'})"
            if error.errno in _NO_ROOM:
                raise StorageFull("the image storage is full; try again later", reason) from error
            raise StorageUnavailable("the image storage is failing; try again later", reason) from error

    return translated


@implementer(IBlobStore, IStoreUpkeep)
class FilesystemBlobStore:
    log = Logger()

    def __init__(
        self,
        root: Path,
        offload: Offload,
        me: str | None = None,
        is_alive: Callable[[str], bool] | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """me: this process's name, and is_alive (which blocks) tells whether
        another one runs, when several share root; None when it is alone;
        metrics: where each operation's time is recorded."""
        self.root = root
        self._temporaries = root / _TEMPORARY
        self._temporary = self._temporaries / me if me else self._temporaries
        self._is_alive = is_alive
        self._offload = offload
        self._metrics = metrics
        self._cached = CachedReader()
        self._root_text = os.fspath(root)

    def put(self, key: str, data: bytes) -> Deferred[None]:
        return self._offload(
            timed(self._metrics, "put", self._put), self._path(key), data, not is_derived_key(key)
        )

    def get(self, key: str) -> Deferred[bytes]:
        # The path as text: pathlib's joining costs more than the read below.
        path = f"{self._root_text}/{validate_key(key)}"
        started = time.perf_counter()
        data = self._cached.read(path, READ_HERE_BYTES)
        if data is not None:
            self._metrics.storage_operation("get", time.perf_counter() - started, False)
            return succeed(data)
        return self._offload(timed(self._metrics, "get", self._get), Path(path))

    def open(self, key: str) -> Deferred[IBlobReader]:
        return self._offload(timed(self._metrics, "open", self._open), self._path(key))

    def size(self, key: str) -> Deferred[int | None]:
        return self._offload(timed(self._metrics, "size", self._size), self._path(key))

    def delete(self, key: str) -> Deferred[None]:
        return self._offload(timed(self._metrics, "delete", self._delete), self._path(key))

    def delete_prefix(self, prefix: str) -> Deferred[None]:
        return self._offload(timed(self._metrics, "delete_prefix", self._delete_tree), self._path(prefix))

    def recover(self) -> Deferred[int]:
        return self._offload(self._recover)

    def sweep(self) -> Deferred[int]:
        return self._offload(self._sweep)

    def wipe(self) -> Deferred[None]:
        return self._offload(self._wipe)

    def list(self, prefix: str) -> IKeyListing:
        return _Listing(self._keys(prefix), self._offload)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    # The methods below run in a pool thread.

    @_storage_errors
    def _put(self, path: Path, data: bytes, durable_name: bool = True) -> None:
        """durable_name: fsync the directories too, so that the name
        survives a power failure (the contents always do, if it does)."""
        descriptor, temporary = tempfile.mkstemp(dir=self._temporary, prefix="put-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            self._move_into_place(temporary, path, durable_name)
        except BaseException:
            with suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temporary)
            raise

    def _move_into_place(self, temporary: str, path: Path, durable_name: bool) -> None:
        # A concurrent delete_prefix may remove directories on the way
        # between their creation and the rename: make them again and retry.
        for attempt in range(_RENAME_ATTEMPTS):
            try:
                self._make_directories(path.parent, durable_name)
                os.replace(temporary, path)
                break
            except FileNotFoundError:
                if attempt == _RENAME_ATTEMPTS - 1:
                    raise
        if not durable_name:
            return
        # Gone already if a delete_prefix came right after the rename; the
        # writer learns that from the metadata, not from here.
        with suppress(FileNotFoundError):
            _fsync_directory(path.parent)

    @_storage_errors
    def _get(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(str(path.relative_to(self.root))) from None

    @_storage_errors
    def _open(self, path: Path) -> IBlobReader:
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(str(path.relative_to(self.root))) from None
        # An open file stays readable after a delete removes its name.
        return _FileReader(file, os.fstat(file.fileno()).st_size, self._offload)

    @_storage_errors
    def _size(self, path: Path) -> int | None:
        try:
            status = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return status.st_size if stat.S_ISREG(status.st_mode) else None

    @_storage_errors
    def _delete(self, path: Path) -> None:
        with suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
            _fsync_directory(path.parent)
        _prune(path.parent)

    @_storage_errors
    def _delete_tree(self, path: Path) -> None:
        # Writers may add files while this runs (a derivation finishing for
        # an original being deleted); errors are ignored, and such a writer
        # removes its own file once it finds the original gone.
        shutil.rmtree(path, ignore_errors=True)
        with suppress(FileNotFoundError, NotADirectoryError):
            _fsync_directory(path.parent)
        _prune(path.parent)

    @_storage_errors
    def _sweep(self) -> int:
        """The temporary directories of processes that are gone; this
        process's own, and loose files (which only start-up removes), are
        left: their writes may be under way."""
        removed = 0
        if self._temporary == self._temporaries or self._is_alive is None:
            return removed  # alone: nobody else writes here
        with suppress(FileNotFoundError):
            for leftover in self._temporaries.iterdir():
                if leftover.is_dir() and leftover != self._temporary and not self._is_alive(leftover.name):
                    removed += self._remove_temporaries_of(leftover)
        if removed:
            self.log.info(
                "Removed {count} unfinished writes of processes that are gone from {directory}",
                count=removed,
                directory=str(self._temporaries),
            )
        return removed

    @staticmethod
    def _remove_temporaries_of(directory: Path) -> int:
        count = sum(1 for path in directory.iterdir())
        shutil.rmtree(directory, ignore_errors=True)
        return count

    def _recover(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        self._temporaries.mkdir(exist_ok=True)
        removed = 0
        for leftover in self._temporaries.iterdir():
            if leftover.is_dir():
                # The writes of another process: only if it is gone.
                if leftover != self._temporary and (
                    self._is_alive is None or not self._is_alive(leftover.name)
                ):
                    removed += self._remove_temporaries_of(leftover)
            else:
                with suppress(FileNotFoundError, NotADirectoryError):
                    leftover.unlink()
                    removed += 1
        if self._temporary.is_dir():
            for leftover in self._temporary.iterdir():
                with suppress(FileNotFoundError):
                    leftover.unlink()
                    removed += 1
        self._temporary.mkdir(exist_ok=True)
        if removed:
            self.log.info(
                "Removed {count} unfinished writes from {directory}",
                count=removed,
                directory=str(self._temporaries),
            )
        return removed

    def _keys(self, prefix: str) -> Iterator[str]:
        """Every key below prefix.  A directory that cannot be read fails the
        listing: a key left out would look lost, and a repair would forget a
        healthy original.  Symbolic links are followed, as get() follows
        them; one that leads to a directory listed already fails it too.
        Names that cannot be keys (an NFS client's .nfsXXXX, an editor's
        backup) are not the store's, and are left out."""
        top = self._path(prefix)
        seen: set[tuple[int, int]] = set()
        for directory, subdirectories, names in os.walk(top, onerror=_unlisted, followlinks=True):
            try:
                status = os.stat(directory)
            except OSError as error:
                _unlisted(error)
                subdirectories.clear()  # removed meanwhile
                continue
            if (status.st_dev, status.st_ino) in seen:
                raise StorageUnavailable(
                    _UNLISTED, f"cannot list {directory}: a symbolic link leads to it again"
                )
            seen.add((status.st_dev, status.st_ino))
            below = Path(directory).relative_to(self.root)
            subdirectories[:] = sorted(name for name in subdirectories if _is_key(below / name))
            for name in names:
                if _is_key(below / name):
                    yield str(below / name)

    def _wipe(self) -> None:
        with suppress(FileNotFoundError, NotADirectoryError):
            shutil.rmtree(self.root)
        self._recover()

    def _make_directories(self, directory: Path, durable: bool = True) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with suppress(FileExistsError):
                new.mkdir()
            if durable:
                # A new directory is durable only once its parent records it.
                _fsync_directory(new.parent)


@implementer(IBlobReader)
class _FileReader:
    def __init__(self, file: BinaryIO, size: int, offload: Offload) -> None:
        self.size = size
        self._file = file
        self._offload = offload

    def read(self, size: int) -> Deferred[bytes]:
        return self._offload(_storage_errors(self._file.read), size)

    def skip(self, count: int) -> Deferred[None]:
        return self._offload(_storage_errors(self._skip), count)

    def _skip(self, count: int) -> None:
        self._file.seek(min(self.size, self._file.tell() + max(0, count)))

    def close(self) -> Deferred[None]:
        return self._offload(self._file.close)


@implementer(IKeyListing)
class _Listing:
    """A walk of the tree, advanced a page at a time on a pool thread."""

    def __init__(self, walk: Iterator[str], offload: Offload, page: int = _PAGE) -> None:
        self._walk = walk
        self._offload = offload
        self._page = page

    def next_page(self) -> Deferred[list[str]]:
        return self._offload(self._next_page)

    @_storage_errors
    def _next_page(self) -> list[str]:
        return list(islice(self._walk, self._page))


def _unlisted(error: OSError) -> None:
    # Removed meanwhile, by a deletion pruning its directory: nothing to list.
    if isinstance(error, FileNotFoundError):
        return
    raise StorageUnavailable(_UNLISTED, f"cannot list {error.filename}: {error.strerror or error}") from error


def _is_key(path: Path) -> bool:
    try:
        validate_key(str(path))
    except ValueError:
        return False
    return True


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
