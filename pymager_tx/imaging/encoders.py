"""
Writing derived images: per-format parameters, palettes with a transparent
index for GIF, animations, and whether a source was losslessly compressed.

Nothing of the source's metadata is written: no EXIF, XMP or comments, and no
colour profile (pixels are sRGB by then, which every viewer assumes).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from PIL import Image, PngImagePlugin

from pymager_tx.core.formats import ImageFormat
from pymager_tx.imaging.pixels import Colour, has_alpha

# GIF: colours the picture gets, and the palette index kept for transparency.
_GIF_COLOURS = 255
_TRANSPARENT_INDEX = 255
# Alpha below this becomes the transparent index (GIF has no partial alpha).
_GIF_ALPHA_THRESHOLD = 128
_VP8X_ALPHA = 0x10
# TIFF compressions that keep every sample exactly.
_LOSSY_TIFF = frozenset({"jpeg", "tiff_jpeg", "webp"})
# A PNG text entry that says the PNG was made from a lossily compressed
# picture (a working copy of a lossy WebP with alpha, say), so what is derived
# from it is no more lossless than what would be derived from that picture.
_SOURCE_KEY, _LOSSY = "pymager-source", "lossy"


@dataclass(frozen=True)
class Encoding:
    """How to write: quality settings and what is known of the source."""

    jpeg_quality: int
    jpeg_progressive: bool
    jpeg_subsampling: str
    webp_quality: int
    # Smaller JPEGs are baseline even when jpeg_progressive (see EncodeOptions).
    jpeg_progressive_min_pixels: int = 0
    png_compress_level: int = 6
    lossless_source: bool = False
    # PNG only: say in the file whether the source was lossless (see _SOURCE_KEY).
    png_marks_source: bool = False
    background: Colour = (255, 255, 255)


def encode_still(image: Image.Image, output: ImageFormat, encoding: Encoding) -> bytes:
    picture = ready_for(image, output)
    return written(picture, output.pillow_name, _parameters(output, encoding, picture.size))


def encode_animation(
    frames: Sequence[Image.Image],
    durations: Sequence[int],
    loop: int | None,
    output: ImageFormat,
    encoding: Encoding,
    after_frame: Callable[[int], object] | None = None,
) -> bytes:
    """loop: the source's loop count (0: forever); None: the source plays once.
    after_frame(index) is called as each frame is made ready (quantized, for
    GIF), the costly part, so a caller can give up between frames."""
    pictures = []
    for index, frame in enumerate(frames):
        pictures.append(ready_for(frame, output))
        if after_frame is not None:
            after_frame(index)
    params = _parameters(output, encoding, pictures[0].size)
    params.update(save_all=True, append_images=pictures[1:], duration=list(durations))
    if loop is not None:
        params["loop"] = loop
    elif output.pillow_name == "WEBP":
        params["loop"] = 1  # WebP always states a count; a GIF without one plays once
    if output.pillow_name == "GIF":
        # Every frame is a whole picture: restore to the background (clear)
        # between frames so transparent parts never show the previous one.
        params["disposal"] = 2
    data = written(pictures[0], output.pillow_name, params)
    if output.pillow_name == "WEBP" and any(has_alpha(picture) for picture in pictures):
        data = _flag_webp_alpha(data)
    return data


def written(picture: Image.Image, format_name: str, parameters: dict[str, object]) -> bytes:
    """picture saved as format_name, into an anonymous file in memory where
    the system offers one (memfd, Linux), else into a BytesIO.

    Given a file with a descriptor, Pillow's encoders write to it without
    the GIL; given a BytesIO, they hold it for the whole encode.  A
    progressive JPEG is written in one call at its end: 15-25 ms of a working
    copy's encode during which no other thread, the reactor's included, ran
    (bench/RESULTS.md, stop 21).  No memfd (another system, a seccomp filter
    that refuses it, no descriptor left): the BytesIO, slower for the others
    but the same bytes."""
    file = _memory_file()
    if file is None:
        buffer = BytesIO()
        picture.save(buffer, format=format_name, **parameters)
        return buffer.getvalue()
    with file:
        picture.save(file, format=format_name, **parameters)
        file.seek(0)
        return file.read()


def _memory_file() -> BinaryIO | None:
    make = getattr(os, "memfd_create", None)
    if make is None:
        return None
    try:
        descriptor = make("pymager-encoded", os.MFD_CLOEXEC)
    except OSError:
        return None
    return open(descriptor, "w+b")  # closed by written()


def _flag_webp_alpha(data: bytes) -> bytes:
    """Set the VP8X alpha flag of an animated WebP.

    libwebp crops each frame to what changes; when the transparent parts are
    uncovered canvas, no frame carries alpha and the flag stays clear, so
    readers that trust it (Pillow) show the canvas opaque black."""
    if data[12:16] != b"VP8X":
        return data
    return data[:20] + bytes([data[20] | _VP8X_ALPHA]) + data[21:]


def ready_for(image: Image.Image, output: ImageFormat) -> Image.Image:
    """The picture in a mode the output format writes, without metadata."""
    name = output.pillow_name
    if has_alpha(image) and not output.supports_alpha:
        raise ValueError(f"flatten before writing {name}")  # a bug, not a client error
    if name == "GIF":
        picture = _gif_palette(image) if has_alpha(image) else image
    elif name in ("WEBP", "AVIF") and image.mode in ("L", "LA"):
        picture = image.convert("RGBA" if image.mode == "LA" else "RGB")
    else:
        picture = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGB")
    if picture is image:
        picture = image.copy() if image.info else image
    # Pillow writes what info holds (GIF comments, PNG text, EXIF): clear it.
    picture.info = {"transparency": _TRANSPARENT_INDEX} if picture.mode == "P" else {}
    return picture


def _gif_palette(image: Image.Image) -> Image.Image:
    """Quantize to 255 colours and mark transparent pixels with index 255."""
    rgba = image.convert("RGBA")
    paletted = rgba.convert("RGB").quantize(_GIF_COLOURS)
    palette = paletted.getpalette() or []
    paletted.putpalette(palette[: 3 * _GIF_COLOURS] + [0] * (3 * 256 - len(palette[: 3 * _GIF_COLOURS])))
    clear = rgba.getchannel("A").point(lambda alpha: 255 if alpha < _GIF_ALPHA_THRESHOLD else 0)
    paletted.paste(_TRANSPARENT_INDEX, mask=clear)
    return paletted


def _parameters(output: ImageFormat, encoding: Encoding, size: tuple[int, int]) -> dict[str, object]:
    name = output.pillow_name
    if name == "JPEG":
        return {
            "quality": encoding.jpeg_quality,
            "optimize": True,
            "progressive": encoding.jpeg_progressive
            and size[0] * size[1] >= encoding.jpeg_progressive_min_pixels,
            "subsampling": encoding.jpeg_subsampling,
        }
    if name == "WEBP":
        if encoding.lossless_source:
            return {"lossless": True}
        return {"quality": encoding.webp_quality}
    if name == "PNG":
        parameters: dict[str, object] = {"optimize": False, "compress_level": encoding.png_compress_level}
        if encoding.png_marks_source and not encoding.lossless_source:
            text = PngImagePlugin.PngInfo()
            text.add_text(_SOURCE_KEY, _LOSSY)
            parameters["pnginfo"] = text
        return parameters
    if name == "GIF":
        return {"optimize": False}
    return {}


def lossless_source(image: Image.Image, data: bytes) -> bool:
    """Whether the source kept every sample exactly, so a WebP of it should too."""
    if image.format == "PNG":
        return image.info.get(_SOURCE_KEY) != _LOSSY
    if image.format in ("GIF", "BMP"):
        return True
    if image.format == "TIFF":
        return str(image.info.get("compression", "raw")) not in _LOSSY_TIFF
    if image.format == "WEBP":
        return webp_is_lossless(data)
    return False


def webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP's first picture is VP8L (lossless) rather than VP8.

    Pillow does not say; the RIFF chunks do.  Unknown means lossy."""
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        (length,) = struct.unpack_from("<I", data, offset + 4)
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
        if kind == b"ANMF":
            offset += 8 + 16  # into the frame: its header, then its chunks
            continue
        offset += 8 + length + (length & 1)
    return False
