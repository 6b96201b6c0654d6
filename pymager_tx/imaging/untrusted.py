"""
Opening client bytes with Pillow, safely.

Only the allowed decoders ever see the bytes; the pixel count is checked from
the header, by our own count, before anything is decoded; a JPEG with more
scans than any encoder writes is refused (a "scan bomb"); every way Pillow
reports a bad file becomes one domain error; and a deadline can be checked
between stages of the work.

Running out of memory is the one failure that is not the file's: it becomes
OutOfMemory (503, try again), never InvalidImage, so that nothing remembers
a good image as a bad one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageFile, UnidentifiedImageError

from pymager_tx.core.errors import (
    DerivationTooCostly,
    InvalidImage,
    OutOfMemory,
    PymagerError,
    TooManyPixels,
)
from pymager_tx.imaging.pixels import eight_bit_transparency_key

MAX_JPEG_SCANS = 100


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    decoders: tuple[str, ...]
    max_frames: int = 500  # more frames than this: the first frame only
    # Frames x the canvas all frames cover, and frames x output pixels: likewise.
    max_animation_pixels: int = 100_000_000
    time_budget: float | None = None  # seconds for one derivation (the caller sets render's deadline)


@contextmanager
def opened(data: bytes, limits: DecodeLimits) -> Iterator[ImageFile.ImageFile]:
    if not data:
        raise InvalidImage("the upload is empty")
    accepted = ", ".join(limits.decoders)
    try:
        image = Image.open(BytesIO(data), formats=list(limits.decoders))
    except UnidentifiedImageError:
        raise InvalidImage(f"not an image in an accepted format ({accepted})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"the image declares more pixels than the limit of {limits.max_pixels}") from None
    except MemoryError:
        raise out_of_memory("opening") from None
    except Exception:
        # Pillow reports bad headers with many exception types (SyntaxError,
        # struct.error, ValueError, ...); all of them mean the same to a client.
        raise InvalidImage("the image header is damaged or not understood") from None
    with image:
        check_pixels(image.size, limits)
        if is_jpeg(image):
            _check_scans(data)
        eight_bit_transparency_key(image)
        yield image


def check_pixels(size: tuple[int, int], limits: DecodeLimits) -> None:
    """Refuse what declares too many pixels, by our own count: Pillow only
    warns between its limit and twice it, and a warnings filter is process
    state that this function must not depend on."""
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImage(f"the image declares an empty size {width}x{height}")
    limit = pixel_limit(limits)
    if width * height > limit:
        raise TooManyPixels(f"the image is {width}x{height} = {width * height} pixels; the limit is {limit}")


def pixel_limit(limits: DecodeLimits) -> int:
    """The most pixels one picture may have: ours, or Pillow's if lower."""
    if Image.MAX_IMAGE_PIXELS is None:
        return limits.max_pixels
    return min(limits.max_pixels, Image.MAX_IMAGE_PIXELS)


@contextmanager
def decoding() -> Iterator[None]:
    """Turn any failure while decoding untrusted pixels into InvalidImage,
    but running out of memory into OutOfMemory."""
    try:
        yield
    except PymagerError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels("the image expands to more pixels than allowed") from None
    except MemoryError:
        raise out_of_memory("decoding") from None
    except Exception:
        raise InvalidImage("the image data is truncated or corrupt") from None


@contextmanager
def memory_guarded(work: str) -> Iterator[None]:
    """Turn a MemoryError anywhere in work (resizing, converting, encoding:
    the stages outside decoding()) into OutOfMemory."""
    try:
        yield
    except MemoryError:
        raise out_of_memory(work) from None


def out_of_memory(stage: str) -> OutOfMemory:
    # The image may well be fine: the same request can work once memory is free.
    return OutOfMemory(
        "the server ran out of memory working on this image; try again later",
        f"MemoryError while {stage} an image",
    )


def check_deadline(deadline: float | None, stage: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DerivationTooCostly(f"deriving the image took longer than its time budget ({stage})")


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


def is_jpeg(image: Image.Image) -> bool:
    return image.format in ("JPEG", "MPO")
