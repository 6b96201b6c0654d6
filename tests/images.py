"""
Test images made with Pillow, and measurements on images.

Most fixtures are generated here so that each test says what its image is;
the original pymager's real photographs live in tests/fixtures/pymager-java.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pillow_heif
from PIL import Image, ImageChops, ImageStat

from pymager_tx.core.model import DerivedSpec, ResizeMode, Size
from pymager_tx.imaging.formats import default_decoders, output_format_for
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, render

FIXTURES = Path(__file__).parent / "fixtures" / "pymager-java"
SHARED_TESTDATA = Path("/work/shared/testdata")
LIMITS = DecodeLimits(max_pixels=50_000_000, decoders=default_decoders())

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


def heic(
    image: Image.Image, orientation: int | None = None, icc_profile: bytes | None = None, quality: int = 90
) -> bytes:
    """image's pixels as an iPhone stores them: HEVC in a HEIF container
    (pillow-heif's encoder, with x265).  An orientation is written as iPhones
    do: the pixels as the sensor saw them (image), the turn as the
    container's irot/imir transforms and, again, as the EXIF tag."""
    params: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    if icc_profile is not None:
        params["icc_profile"] = icc_profile
    buffer = BytesIO()
    rgb = image.convert("RGB")
    pillow_heif.encode("RGB", rgb.size, rgb.tobytes(), buffer, **params)
    return buffer.getvalue()


def heic_declaring(width: int, height: int) -> bytes:
    """A small HEIC whose image spatial extent box (ispe) claims width x
    height: a decompression bomb's header over a few hundred bytes of HEVC."""
    data = heic(Image.new("RGB", (64, 64), RED))
    assert data.count(b"ispe") == 1
    at = data.index(b"ispe") + 8  # past the type and the full box's version and flags
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


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


def png_sixteen_bit(
    pixels: list[list[tuple[int, ...]]], colour_type: int, transparency: tuple[int, ...] | None = None
) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes none but grey): pixels is
    rows of samples; colour_type 0 grey, 2 RGB, 4 grey and alpha, 6 RGBA;
    transparency, the tRNS key (grey: one value; RGB: three)."""
    height, width = len(pixels), len(pixels[0])
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    raw = b"".join(b"\0" + b"".join(struct.pack(f">{len(p)}H", *p) for p in row) for row in pixels)
    chunks = [(b"IHDR", ihdr)]
    if transparency is not None:
        chunks.append((b"tRNS", struct.pack(f">{len(transparency)}H", *transparency)))
    chunks += [(b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
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


# Deriving, as the service does


def limits(**changes: object) -> DecodeLimits:
    return replace(LIMITS, **changes)  # type: ignore[arg-type]


def spec(width: int, height: int, extension: str = "jpg", mode: ResizeMode = ResizeMode.CROP) -> DerivedSpec:
    output = output_format_for(extension)
    assert output is not None, extension
    return DerivedSpec(Size(width, height), output, mode)


def derive(
    data: bytes,
    width: int,
    height: int,
    extension: str = "jpg",
    mode: ResizeMode = ResizeMode.CROP,
    **options: object,
) -> Image.Image:
    """render(), then the result opened, checked to be the size it says."""
    rendered = render(data, spec(width, height, extension, mode), LIMITS, EncodeOptions(**options))  # type: ignore[arg-type]
    image = opened(rendered.data)
    assert (rendered.width, rendered.height) == image.size
    assert image.format == rendered.format.pillow_name
    return image


# Measurements


def mean_colour(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> tuple[int, ...]:
    """Mean of each band over box (the whole image by default), rounded."""
    region = image if box is None else image.crop(box)
    return tuple(round(value) for value in ImageStat.Stat(region).mean)


def corner(image: Image.Image, which: str, inset: float = 0.1) -> tuple[int, ...]:
    """Mean RGB colour of a corner square ("tl", "tr", "bl", "br"), a tenth of each side."""
    width, height = image.size
    w, h = max(1, round(width * inset)), max(1, round(height * inset))
    left = 0 if which[1] == "l" else width - w
    top = 0 if which[0] == "t" else height - h
    return mean_colour(image.convert("RGB"), (left, top, left + w, top + h))


def marked(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """Grey, with a red square in the top-left corner and a blue one in the
    top-right: where both end up tells every rotation and mirroring apart."""
    image = Image.new("RGB", size, (128, 128, 128))
    w, h = size[0] // 4, size[1] // 4
    image.paste(RED, (0, 0, w, h))
    image.paste(BLUE, (size[0] - w, 0, size[0], h))
    return image


# Colour profiles, built here so that no opaque profile file is needed

# Display P3 primaries and white point, adapted to the D50 connection space
# (as in Apple's Display P3 profile); tone curve: gamma 2.2 for simplicity.
DISPLAY_P3 = ((0.515102, 0.241196, -0.001053), (0.291965, 0.692245, 0.041881), (0.157153, 0.066561, 0.784378))
_D50 = (0.964203, 1.0, 0.824905)


def rgb_profile(primaries: tuple[tuple[float, float, float], ...] = DISPLAY_P3, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (what most camera and
    wide-gamut profiles are): description, white point, colorants, curves."""

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    description = b"Test wide gamut\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(description)) + description + b"\0" * 79),
        (b"cprt", b"text\0\0\0\0No copyright\0"),
        (b"wtpt", xyz(_D50)),
        (b"rXYZ", xyz(primaries[0])),
        (b"gXYZ", xyz(primaries[1])),
        (b"bXYZ", xyz(primaries[2])),
    ]
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, bodies = [], b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        entries.append(struct.pack(">4sII", signature, offset + len(bodies), len(body)))
        bodies += body
    size = offset + len(bodies)
    header = struct.pack(
        ">I4sI4s4s4s12s4s4sI4s4sQI",
        size,
        b"none",
        0x02100000,
        b"mntr",
        b"RGB ",
        b"XYZ ",
        b"\0" * 12,
        b"acsp",
        b"\0" * 4,
        0,
        b"\0" * 4,
        b"\0" * 4,
        0,
        0,
    )
    header += (
        b"".join(struct.pack(">i", round(v * 65536)) for v in _D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + bodies


# Animations


def animation(
    format: str,
    colours: list[tuple[int, int, int]],
    size: tuple[int, int] = (60, 40),
    durations: list[int] | None = None,
    **params: object,
) -> bytes:
    """One solid frame per colour, each with a white marker in its top-left corner."""
    frames = []
    for colour in colours:
        frame = Image.new("RGB", size, colour)
        frame.paste((255, 255, 255), (0, 0, size[0] // 4, size[1] // 4))
        frames.append(frame)
    return encode(
        frames[0],
        format,
        save_all=True,
        append_images=frames[1:],
        duration=durations or [100] * len(frames),
        **params,
    )


def frames_of(image: Image.Image) -> list[Image.Image]:
    out = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        out.append(image.convert("RGBA"))
    return out
