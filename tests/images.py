"""
Test images made with Pillow, and measurements on images.

Most fixtures are generated here so that each test says what its image is;
the original pymager's real photographs live in tests/fixtures/pymager-java.
"""

from __future__ import annotations

import math
import struct
import zlib
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

FIXTURES = Path(__file__).parent / "fixtures" / "pymager-java"

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, format: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def solid(size: tuple[int, int] = (64, 48), color: tuple[int, ...] = RED, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def jpeg(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = RED, **params: object) -> bytes:
    return encode(solid(size, color), "JPEG", quality=95, **params)


def png(size: tuple[int, int] = (64, 48), color: tuple[int, ...] = RED, mode: str = "RGB") -> bytes:
    return encode(solid(size, color, mode), "PNG")


def three_bands(size: tuple[int, int] = (300, 100)) -> Image.Image:
    """Red, green and blue vertical bands: a centre crop keeps only green."""
    image = Image.new("RGB", size, GREEN)
    third = size[0] // 3
    image.paste(RED, (0, 0, third, size[1]))
    image.paste(BLUE, (size[0] - third, 0, size[0], size[1]))
    return image


def halves(size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Red left half, blue right half."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


def with_orientation(image: Image.Image, orientation: int, format: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, format, exif=exif.tobytes())


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels but holds almost no data:
    the shape of a decompression bomb, without the bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")]
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return out


def opened(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two same-sized images, in dB, over RGB."""
    difference = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(rms**2 for rms in ImageStat.Stat(difference).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def truncated_jpeg() -> bytes:
    """A JPEG cut off two thirds into its image data: the header is whole."""
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    return data[: len(data) * 2 // 3]
