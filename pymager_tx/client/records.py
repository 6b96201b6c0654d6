"""What the service answers, as typed records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from twisted.web.http_headers import Headers


@dataclass(frozen=True, kw_only=True)
class _Stored:
    """What the service says of any image it stores."""

    url: str
    format: str  # canonical name: "jpeg", "png", ...
    media_type: str
    width: int  # as displayed, after the EXIF orientation
    height: int
    byte_length: int
    created_at: datetime


def _stored(document: dict[str, Any]) -> dict[str, Any]:
    """_Stored's fields from a JSON document."""
    return {
        "url": str(document["url"]),
        "format": str(document["format"]),
        "media_type": str(document["media_type"]),
        "width": int(document["width"]),
        "height": int(document["height"]),
        "byte_length": int(document["byte_length"]),
        "created_at": datetime.fromisoformat(str(document["created_at"]).replace("Z", "+00:00")),
    }


@dataclass(frozen=True, kw_only=True)
class Original(_Stored):
    """The description an upload answers with (201 Created)."""

    id: str
    sha256: str

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Original:
        return cls(id=str(document["id"]), sha256=str(document["sha256"]), **_stored(document))


@dataclass(frozen=True, kw_only=True)
class Rendition(_Stored):
    """A derived image the service has stored (in a Meta)."""

    name: str  # <ID>-<W>x<H>[-mode].<ext>

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Rendition:
        return cls(name=str(document["name"]), **_stored(document))


@dataclass(frozen=True, kw_only=True)
class Meta:
    """GET /meta/<ID>: the original's description, its focal point (x, y
    from 0 to 1 of the displayed picture, or None), its BlurHash and
    dominant colour ("#rrggbb"), and the renditions stored."""

    original: Original
    focal_point: tuple[float, float] | None
    blurhash: str | None
    dominant_color: str | None
    renditions: list[Rendition]

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Meta:
        focal = document.get("focal_point")
        return cls(
            original=Original.from_json(document),
            focal_point=None if focal is None else (float(focal["x"]), float(focal["y"])),
            blurhash=document.get("blurhash"),
            dominant_color=document.get("dominant_color"),
            renditions=[Rendition.from_json(item) for item in document.get("renditions", [])],
        )


@dataclass(frozen=True, kw_only=True)
class Page:
    """A page of GET /originals: its originals, and the ID to list after for
    the next page (None on the last)."""

    items: list[Original]
    following: str | None

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Page:
        items = [Original.from_json(item) for item in document["items"]]
        more = document.get("next") is not None and bool(items)
        return cls(items=items, following=items[-1].id if more else None)


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What the headers of an image answer (GET, HEAD, 304) say of it."""

    url: str
    media_type: str | None
    length: int | None  # bytes of the image; None when not announced
    etag: str | None  # as sent, quoted: pass it back as etag= to revalidate
    last_modified: datetime | None
    cache_control: str | None

    @property
    def sha256(self) -> str | None:
        """The image's SHA-256: the service's ETag is it, quoted."""
        if self.etag and len(self.etag) == 66 and self.etag[0] == self.etag[-1] == '"':
            return self.etag[1:-1]
        return None

    @classmethod
    def from_headers(cls, url: str, headers: Headers, length: int | None) -> ImageInfo:
        def first(name: str) -> str | None:
            values = headers.getRawHeaders(name)
            return values[0] if values else None

        if length is None:
            # HEAD: Twisted leaves the announced length among the headers.
            announced = first("content-length")
            length = int(announced) if announced and announced.isdigit() else None
        modified = first("last-modified")
        try:
            last_modified = parsedate_to_datetime(modified) if modified else None
        except (TypeError, ValueError):
            last_modified = None
        return cls(
            url=url,
            media_type=first("content-type"),
            length=length,
            etag=first("etag"),
            last_modified=last_modified,
            cache_control=first("cache-control"),
        )


@dataclass(frozen=True, kw_only=True)
class Image(ImageInfo):
    """An image, read whole."""

    data: bytes

    def __repr__(self) -> str:
        return f"Image(url={self.url!r}, media_type={self.media_type!r}, {len(self.data)} bytes)"


@dataclass(frozen=True, kw_only=True)
class NotModified:
    """304: the image has not changed since the ETag given."""

    info: ImageInfo
