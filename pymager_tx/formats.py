"""
Image formats the service reads and writes, and what Pillow in this process can do.

One table names every format a user would expect by its URL extension; what is
offered is the part of it the installed Pillow can really decode or encode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from PIL import Image, features


@dataclass(frozen=True)
class ImageFormat:
    name: str  # canonical lowercase name, used in JSON and derived variants
    pillow_name: str
    media_type: str
    extensions: tuple[str, ...]
    supports_alpha: bool


_KNOWN: tuple[ImageFormat, ...] = (
    ImageFormat("jpeg", "JPEG", "image/jpeg", ("jpg", "jpeg"), supports_alpha=False),
    ImageFormat("png", "PNG", "image/png", ("png",), supports_alpha=True),
    ImageFormat("gif", "GIF", "image/gif", ("gif",), supports_alpha=True),
    ImageFormat("webp", "WEBP", "image/webp", ("webp",), supports_alpha=True),
    ImageFormat("avif", "AVIF", "image/avif", ("avif",), supports_alpha=True),
    ImageFormat("tiff", "TIFF", "image/tiff", ("tif", "tiff"), supports_alpha=True),
    ImageFormat("bmp", "BMP", "image/bmp", ("bmp",), supports_alpha=False),
)

# Pillow names a JPEG that carries Multi-Picture data (many phones and cameras
# write one) "MPO"; it is a JPEG to every viewer and to us.
_PILLOW_ALIASES = {"MPO": "JPEG"}

# Decoders a production service opens by default: the formats phones, cameras,
# browsers and design tools produce.  Everything else Pillow parses stays shut.
DEFAULT_DECODERS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP")

_FEATURE_FOR = {"WEBP": "webp", "AVIF": "avif", "JPEG": "jpg"}


def _pillow_has(pillow_name: str, registry: Mapping[str, object]) -> bool:
    Image.init()
    feature = _FEATURE_FOR.get(pillow_name)
    if feature is not None and not features.check(feature):
        return False
    return pillow_name in registry


@cache
def writable_extensions() -> dict[str, ImageFormat]:
    """Lowercase URL extension -> format, for every format this Pillow can encode."""
    return {
        extension: fmt
        for fmt in _KNOWN
        if _pillow_has(fmt.pillow_name, Image.SAVE)
        for extension in fmt.extensions
    }


def output_format_for(extension: str) -> ImageFormat | None:
    return writable_extensions().get(extension.lower())


@cache
def decodable_formats() -> tuple[str, ...]:
    """Pillow names of the known formats this Pillow can decode."""
    return tuple(fmt.pillow_name for fmt in _KNOWN if _pillow_has(fmt.pillow_name, Image.OPEN))


def default_decoders() -> tuple[str, ...]:
    available = decodable_formats()
    return tuple(name for name in DEFAULT_DECODERS if name in available)


def unknown_decoders(names: Iterable[str]) -> list[str]:
    available = decodable_formats()
    return [name for name in names if name not in available]


def format_for_pillow(pillow_name: str) -> ImageFormat:
    canonical = _PILLOW_ALIASES.get(pillow_name, pillow_name)
    for fmt in _KNOWN:
        if fmt.pillow_name == canonical:
            return fmt
    raise LookupError(pillow_name)


def format_named(name: str) -> ImageFormat:
    """The format with canonical name (as stored in the database)."""
    for fmt in _KNOWN:
        if fmt.name == name:
            return fmt
    raise LookupError(name)
