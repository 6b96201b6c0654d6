"""
Blob keys of originals and derived images.

A key never contains the image ID: it comes from a hash of the ID, sharded
two levels deep so no directory grows huge, and from the upload's generation,
so files of a deleted original can never be mistaken for a new one's.  Every
key is written by one writer only (an upload's generation, a derivation
claim's token), so a file once stored is never overwritten, and a file no
row names and no claim will name is garbage for good.
"""

from __future__ import annotations

import hashlib
import re

from pymager_tx.core.model import ImageId

# Lowercase segments that never start with a dot: no "..", no hidden names,
# nothing a store could mistake for its own bookkeeping.
_KEY = re.compile(r"[a-z0-9][a-z0-9_-]*(?:/[a-z0-9][a-z0-9._-]*)*")


def validate_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


def written_once(key: str) -> bool:
    """Whether key is an image's (an original, a rendition, a working copy):
    written once by its one writer, never to be replaced, so a store that
    can refuse to replace an object does (the probes of /readyz, rewritten
    under one key per process, are not)."""
    return key.startswith(("originals/", "derived/"))


def _image_path(image_id: ImageId, generation: str) -> str:
    digest = hashlib.sha256(image_id.value.encode("ascii")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}/{generation}"


def original_key(image_id: ImageId, generation: str) -> str:
    return validate_key(f"originals/{_image_path(image_id, generation)}")


def derived_prefix(image_id: ImageId, generation: str) -> str:
    return validate_key(f"derived/{_image_path(image_id, generation)}")


def is_derived_key(key: str) -> bool:
    """Whether key is a rendition's (a working copy's too): what can be
    derived again from its original if a power failure takes it."""
    return key.startswith("derived/")


def derived_key(image_id: ImageId, generation: str, variant: str, token: str = "") -> str:
    """The file of one rendition, written under the derivation claim whose
    token it carries: no two claims ever write the same file, so a holder
    that stalled and lost its claim can overwrite nothing but its own.
    (Renditions of releases before tokens have no token in their key.)"""
    suffix = f".{token}" if token else ""
    return validate_key(f"{derived_prefix(image_id, generation)}/{variant}{suffix}")
