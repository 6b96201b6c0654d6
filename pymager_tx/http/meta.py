"""
GET /meta and PATCH /meta: an original's metadata as JSON, and changes to
it (its focal point, the one thing a writer may change).

The answer changes whenever a rendition is derived or the focal point
moves, so it is sent with `Cache-Control: no-cache` and a strong ETag of
its own bytes: a client revalidates every time, and a 304 costs it no body.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

from twisted.web.iweb import IRequest

from pymager_tx.core.errors import InvalidMetaChange, UnsupportedMetaType
from pymager_tx.core.model import FocalPoint
from pymager_tx.core.records import OriginalMeta
from pymager_tx.http.answers import header_text
from pymager_tx.http.conditional import strong_etag

# What a change of metadata may be sent as (RFC 7396's merge patch, or JSON).
META_CHANGE_TYPES = ("application/json", "application/merge-patch+json")
# A change is a few dozen bytes; anything much larger is not one.
MAX_CHANGE_BYTES = 16 * 1024
_CHANGEABLE = ("focal_point",)


@dataclass(frozen=True)
class MetaChange:
    """What a PATCH asks: sets_focal_point False leaves it as it is."""

    sets_focal_point: bool
    focal_point: FocalPoint | None = None


def read_meta_change(content_type: str | None, body: IO[bytes]) -> MetaChange:
    """The change a PATCH body asks for, or the refusal: UnsupportedMetaType
    (415) for anything but JSON, InvalidMetaChange (400) for a body that is
    not a JSON object of changeable members with valid values.  Reads the
    (spooled) body: run it off the reactor."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in META_CHANGE_TYPES:
        raise UnsupportedMetaType(
            f"a change of metadata is sent as {' or '.join(META_CHANGE_TYPES)}; "
            f"got {content_type or 'no Content-Type'}"
        )
    body.seek(0)
    data = body.read(MAX_CHANGE_BYTES + 1)
    if len(data) > MAX_CHANGE_BYTES:
        raise InvalidMetaChange(f"a change of metadata is at most {MAX_CHANGE_BYTES} bytes")
    try:
        document = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidMetaChange("the body is not JSON (UTF-8)") from None
    if not isinstance(document, dict):
        raise InvalidMetaChange('the body is a JSON object, like {"focal_point": {"x": 0.5, "y": 0.3}}')
    unknown = sorted(set(document) - set(_CHANGEABLE))
    if unknown:
        named = ", ".join(repr(name)[:40] for name in unknown)
        raise InvalidMetaChange(f"only {', '.join(_CHANGEABLE)} can be changed; got {named}")
    if "focal_point" not in document:
        return MetaChange(sets_focal_point=False)
    return MetaChange(sets_focal_point=True, focal_point=_focal_point(document["focal_point"]))


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _focal_point(value: Any) -> FocalPoint | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"x", "y"}:
        raise InvalidMetaChange(
            'focal_point is null or an object with exactly "x" and "y", numbers from 0 to 1 '
            "(relative to the displayed picture)"
        )
    x, y = value["x"], value["y"]
    for name, number in (("x", x), ("y", y)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise InvalidMetaChange(f"focal_point.{name} is a number from 0 to 1")
    return FocalPoint(float(x), float(y))


def meta_document(meta: OriginalMeta, url_of: Callable[[str], str]) -> dict[str, object]:
    """The JSON of GET /meta: the upload's answer, the focal point, the
    summary, and the renditions stored (with their URLs, from url_of(path))."""
    original = meta.original
    focal_point = original.focal_point
    return {
        "id": original.image_id,
        "url": url_of(f"/original/{quote(original.image_id)}"),
        "format": original.format,
        "media_type": original.media_type,
        "width": original.width,
        "height": original.height,
        "byte_length": original.byte_length,
        "sha256": original.sha256,
        "created_at": _timestamp(original.created_at),
        "focal_point": None if focal_point is None else {"x": focal_point.x, "y": focal_point.y},
        "blurhash": original.blurhash,
        "dominant_color": original.dominant_color,
        "renditions": [
            {
                "name": f"{original.image_id}-{rendition.variant}",
                "url": url_of(f"/derived/{quote(original.image_id)}-{quote(rendition.variant)}"),
                "format": rendition.format,
                "media_type": rendition.media_type,
                "width": rendition.width,
                "height": rendition.height,
                "byte_length": rendition.byte_length,
                "created_at": _timestamp(rendition.created_at),
            }
            for rendition in meta.renditions
        ],
    }


def answer_meta(request: IRequest, document: dict[str, object]) -> bytes:
    """The document with its validators: a 304 when the client's copy
    (If-None-Match) is current, headers only for a HEAD."""
    body = json.dumps(document).encode("utf-8")
    etag = strong_etag(hashlib.sha256(body).hexdigest())
    request.setHeader(b"ETag", etag.encode("ascii"))
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if _matches(header_text(request, b"if-none-match"), etag):
        request.setResponseCode(304)
        return b""
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return b"" if request.method == b"HEAD" else body


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _timestamp(value: Any) -> str:
    text: str = value.isoformat().replace("+00:00", "Z")
    return text
