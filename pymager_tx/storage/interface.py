"""The contract every blob store keeps."""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from zope.interface import Interface

# Lowercase segments that never start with a dot: no "..", no hidden names,
# nothing a store could mistake for its own bookkeeping.
_KEY = re.compile(r"[a-z0-9][a-z0-9_-]*(?:/[a-z0-9][a-z0-9._-]*)*")


def validate_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


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
