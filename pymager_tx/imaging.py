"""
Image work as pure functions from bytes to bytes.

No Twisted, no I/O, no globals: callers run these on a thread pool.  Untrusted
data is opened only with an allow-list of decoders, its pixel count is checked
from the header before anything is decoded, and every way a decoder can fail
becomes one domain error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from pymager_tx.errors import InvalidImage, TooManyPixels
from pymager_tx.formats import ImageFormat, format_for_pillow
from pymager_tx.model import DerivedSpec, Size

# Decode at least this many times the target size before the final filter, as
# Pillow's own thumbnail() does: JPEG DCT scaling is fast but coarse.
_REDUCING_GAP = 2.0
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
MAX_JPEG_SCANS = 100
_CARRY_PROFILES = frozenset({"JPEG", "PNG", "WEBP", "AVIF", "TIFF"})
# ICC header bytes 16-19: the colour space the profile describes.
_PROFILE_SPACES = {b"RGB ": frozenset({"RGB", "RGBA"}), b"GRAY": frozenset({"L", "LA"})}


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    decoders: tuple[str, ...]


@dataclass(frozen=True)
class EncodeOptions:
    jpeg_quality: int = 85
    webp_quality: int = 80
    background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int  # as displayed, after the EXIF orientation
    height: int


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: ImageFormat
    width: int
    height: int


def probe(data: bytes, limits: DecodeLimits) -> ImageInfo:
    """Check that data is a whole image we accept, and describe it.

    Decodes the first frame completely (JPEGs at 1/8 scale, which still reads
    every byte), so truncated and corrupt files are refused here rather than
    when someone first asks for a thumbnail.
    """
    with _opened(data, limits) as image:
        assert image.format is not None
        width, height = image.size  # before draft() shrinks it
        with _decoding():
            orientation = _orientation(image)
            if image.format in ("JPEG", "MPO"):
                image.draft(None, (1, 1))
            image.load()
        if orientation in _ROTATED_ORIENTATIONS:
            width, height = height, width
        return ImageInfo(format_for_pillow(image.format), width, height)


def render(data: bytes, spec: DerivedSpec, limits: DecodeLimits, options: EncodeOptions) -> Rendered:
    """Crop data around its centre to the aspect ratio of spec, resize it to
    exactly spec's size, and encode it in spec's format without metadata."""
    with _opened(data, limits) as image, _decoding():
        orientation = _orientation(image)
        if image.format in ("JPEG", "MPO"):
            image.draft(None, _draft_size(image.size, spec.size, orientation))
        upright = ImageOps.exif_transpose(image)
    prepared = _normalize_mode(upright)
    fitted = ImageOps.fit(prepared, (spec.size.width, spec.size.height), method=Image.Resampling.LANCZOS)
    if not spec.output.supports_alpha and fitted.mode == "RGBA":
        fitted = _flatten(fitted, options.background)
    profile = upright.info.get("icc_profile")
    return Rendered(_encode(fitted, spec.output, options, profile), spec.output, *fitted.size)


@contextmanager
def _opened(data: bytes, limits: DecodeLimits) -> Iterator[ImageFile.ImageFile]:
    if not data:
        raise InvalidImage("the upload is empty")
    accepted = ", ".join(limits.decoders)
    try:
        image = Image.open(BytesIO(data), formats=list(limits.decoders))
    except UnidentifiedImageError:
        raise InvalidImage(f"not an image in an accepted format ({accepted})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"the image declares more pixels than the limit of {limits.max_pixels}") from None
    except Exception:
        # Pillow reports bad headers with many exception types (SyntaxError,
        # struct.error, ValueError, ...); all of them mean the same to a client.
        raise InvalidImage("the image header is damaged or not understood") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage(f"the image declares an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise TooManyPixels(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
            )
        if image.format in ("JPEG", "MPO"):
            _check_scans(data)
        yield image


@contextmanager
def _decoding() -> Iterator[None]:
    """Turn any failure while decoding untrusted pixels into InvalidImage."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels("the image expands to more pixels than allowed") from None
    except Exception:
        raise InvalidImage("the image data is truncated or corrupt") from None


def _check_scans(data: bytes) -> None:
    """Refuse a JPEG with more scans than any encoder writes.

    Each progressive scan makes the decoder pass over the whole image again,
    so a small file repeating one tiny scan thousands of times costs minutes
    of CPU.  Counting start-of-scan markers over-counts at worst (the bytes
    can occur inside metadata segments, never inside entropy-coded data),
    which the generous limit absorbs: encoders write at most a dozen scans
    per picture, a few pictures per file.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InvalidImage(f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are accepted")


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft_size(source: tuple[int, int], target: Size, orientation: int) -> tuple[int, int]:
    """The smallest decode size that still leaves the crop area comfortably
    larger than the target, so the final filter has pixels to work with."""
    target_width, target_height = target.width, target.height
    if orientation in _ROTATED_ORIENTATIONS:
        target_width, target_height = target_height, target_width
    width, height = source
    cover = max(target_width / width, target_height / height) * _REDUCING_GAP
    return max(1, math.ceil(width * cover)), max(1, math.ceil(height * cover))


def _normalize_mode(image: Image.Image) -> Image.Image:
    """RGBA where the image carries transparency, otherwise RGB or L."""
    if image.has_transparency_data:
        return image.convert("RGBA")
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        # convert() would clip 16-bit samples; scale them down instead.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")


def _flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    backdrop = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(backdrop, image).convert("RGB")


def _encode(image: Image.Image, output: ImageFormat, options: EncodeOptions, profile: bytes | None) -> bytes:
    # Images made by resize() inherit the source's info: EXIF, XMP, comments.
    # Derived images carry none of it, except the colour profile that says
    # what the pixel values mean (a Display P3 photo looks wrong without it).
    image.info = {}
    params: dict[str, object] = {}
    if output.pillow_name == "JPEG":
        params = {"quality": options.jpeg_quality}
    elif output.pillow_name == "WEBP":
        params = {"quality": options.webp_quality}
    if output.pillow_name in ("WEBP", "AVIF") and image.mode == "L":
        image = image.convert("RGB")
    if output.pillow_name in _CARRY_PROFILES and profile and _profile_fits(profile, image.mode):
        params["icc_profile"] = profile
    buffer = BytesIO()
    image.save(buffer, format=output.pillow_name, **params)
    return buffer.getvalue()


def _profile_fits(profile: bytes, mode: str) -> bool:
    """Whether an ICC profile describes pixels of this mode (a CMYK profile
    no longer fits once the pixels were converted to RGB)."""
    return mode in _PROFILE_SPACES.get(profile[16:20], frozenset())
