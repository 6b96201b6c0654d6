"""
Readiness: whether this process can serve work now, checked for real: the
metadata database answers a query, and the blob store takes a probe object,
gives it back and removes it.  A failure is the domain error of the part
that failed (DatabaseUnavailable, StorageUnavailable), whose detail names
the part and never a host or a path; the reason goes to the log.
"""

from __future__ import annotations

import hashlib

from pymager_tx.core.errors import BlobNotFound, StorageUnavailable
from pymager_tx.ports import IBlobStore, IMetadataStore

_PROBE = b"pymager-tx readiness probe\n"
_FAILED = "the image storage does not store and return objects; try again later"


def probe_key(me: str) -> str:
    """This process's probe: outside originals/ and derived/, so no check
    or listing of images ever sees it."""
    return "probes/" + hashlib.sha256(me.encode("utf-8")).hexdigest()[:32]


async def check_ready(database: IMetadataStore, blobs: IBlobStore, me: str) -> None:
    await database.ping()
    key = probe_key(me)
    try:
        await blobs.put(key, _PROBE)
        returned = await blobs.get(key)
        await blobs.delete(key)
    except StorageUnavailable as error:
        raise StorageUnavailable(_FAILED, error.reason) from None
    except BlobNotFound:
        raise StorageUnavailable(_FAILED, f"the probe {key} was gone as soon as it was stored") from None
    if returned != _PROBE:
        raise StorageUnavailable(_FAILED, f"the probe {key} came back changed")
