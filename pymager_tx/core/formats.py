"""
Image formats the service reads and writes: one table names every format a
user would expect by its URL extension.  What the installed Pillow can really
decode or encode of it is pymager_tx.imaging.formats' to tell.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    name: str  # canonical lowercase name, used in JSON and derived variants
    pillow_name: str
    media_type: str
    extensions: tuple[str, ...]
    supports_alpha: bool
    # False: read from uploads only, never written (no URL extension derives it).
    output: bool = True


KNOWN: tuple[ImageFormat, ...] = (
    ImageFormat("jpeg", "JPEG", "image/jpeg", ("jpg", "jpeg"), supports_alpha=False),
    ImageFormat("png", "PNG", "image/png", ("png",), supports_alpha=True),
    ImageFormat("gif", "GIF", "image/gif", ("gif",), supports_alpha=True),
    ImageFormat("webp", "WEBP", "image/webp", ("webp",), supports_alpha=True),
    ImageFormat("avif", "AVIF", "image/avif", ("avif",), supports_alpha=True),
    ImageFormat("tiff", "TIFF", "image/tiff", ("tif", "tiff"), supports_alpha=True),
    ImageFormat("bmp", "BMP", "image/bmp", ("bmp",), supports_alpha=False),
    # iPhone photos, read through pillow-heif (which names both "HEIF"): HEVC
    # coded files are HEIC, anything else in the container HEIF.
    ImageFormat("heic", "HEIF", "image/heic", ("heic",), supports_alpha=True, output=False),
    ImageFormat("heif", "HEIF", "image/heif", ("heif", "hif"), supports_alpha=True, output=False),
)

# The formats derived images are written in.
OUTPUTS: tuple[ImageFormat, ...] = tuple(fmt for fmt in KNOWN if fmt.output)

# Pillow names a JPEG that carries Multi-Picture data (many phones and cameras
# write one) "MPO"; it is a JPEG to every viewer and to us.
_PILLOW_ALIASES = {"MPO": "JPEG"}

# Decoders a production service opens by default: the formats phones, cameras,
# browsers and design tools produce.  Everything else Pillow parses stays shut.
DEFAULT_DECODERS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP", "HEIF")

FEATURE_FOR = {"WEBP": "webp", "AVIF": "avif", "JPEG": "jpg"}


def format_for_pillow(pillow_name: str, media_type: str | None = None) -> ImageFormat:
    """The format Pillow calls pillow_name; where one Pillow name covers
    several (HEIF: HEIC and HEIF), the one of media_type, else the first."""
    canonical = _PILLOW_ALIASES.get(pillow_name, pillow_name)
    candidates = [fmt for fmt in KNOWN if fmt.pillow_name == canonical]
    for fmt in candidates:
        if fmt.media_type == media_type:
            return fmt
    if candidates:
        return candidates[0]
    raise LookupError(pillow_name)


def format_named(name: str) -> ImageFormat:
    """The format with canonical name (as stored in the database)."""
    for fmt in KNOWN:
        if fmt.name == name:
            return fmt
    raise LookupError(name)
