"""
The ports: what the use cases need of the world, as interfaces, with the
fake beside the real one (pymager_tx.adapters.storage.memory for blobs,
immediate() for the offload seam).

- IBlobStore / IBlobReader: bytes under keys (files, memory; S3 to come).
- Offload: the seam to thread pools; everything that may block goes through
  one (decoding, resizing, encoding, file I/O, database transactions).
- Epoch: the removal signal, which voids what processes hold in memory.
- Peer liveness is pymager_tx.app.peers.Peers, a value of callables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import Interface

T = TypeVar("T")


class IBlobReader(Interface):
    """One stored blob, opened for reading a part at a time, so that an
    answer is sent as the client takes it instead of held whole."""

    size: int

    def read(size: int) -> Deferred[bytes]:
        """The next bytes, at most size of them; b"" once all were read."""

    def close() -> Deferred[None]:
        """Let go of the blob (idempotent)."""


class IBlobStore(Interface):
    """Bytes under keys like 'originals/ab/cd/<hash>/<generation>'.

    Every method returns a Deferred and never blocks the reactor.
    """

    def put(key: str, data: bytes) -> Deferred[None]:
        """Store data under key atomically: a reader, or a restart after a
        crash, finds either all of it or the previous state, never a part."""

    def get(key: str) -> Deferred[bytes]:
        """The bytes under key; fails with BlobNotFound if there are none."""

    def open(key: str) -> Deferred[IBlobReader]:
        """The blob under key, to read a part at a time; fails with
        BlobNotFound if there is none.  The reader sees the blob as it was
        when opened, even if it is deleted meanwhile."""

    def exists(key: str) -> Deferred[bool]:
        """Whether a whole blob is stored under key (without reading it)."""

    def delete(key: str) -> Deferred[None]:
        """Remove key; removing a missing key is not an error."""

    def delete_prefix(prefix: str) -> Deferred[None]:
        """Remove every key below prefix (a key path, without trailing '/')."""

    def recover() -> Deferred[int]:
        """Prepare the store at start-up and remove what interrupted writes
        left behind; fires with the number of leftovers removed."""

    def wipe() -> Deferred[None]:
        """Remove everything (development mode)."""

    def keys(prefix: str) -> Deferred[list[str]]:
        """Every key below prefix, sorted (for consistency checks)."""


class Offload(Protocol):
    def __call__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]: ...


def immediate(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
    """Run work at once in the calling thread."""
    return maybeDeferred(work, *args, **kwargs)


# The removal signal: a value every deletion changes, that a process may read
# on every request (see pymager_tx.app.rendition_cache).  SharedEpoch
# (pymager_tx.adapters.cluster.epoch) shares it between the processes of one
# data directory; LocalEpoch is this process's own.


class Epoch(Protocol):
    def read(self) -> int: ...

    def bump(self) -> None: ...


class LocalEpoch:
    """The epoch of a process that shares its store with nobody."""

    def __init__(self) -> None:
        self._value = 0

    def read(self) -> int:
        return self._value

    def bump(self) -> None:
        self._value += 1
