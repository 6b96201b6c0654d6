"""
What an upload's probe learns of the picture besides its size: a BlurHash
placeholder and the dominant colour, both from one small upright sRGB copy
of the pixels the probe decoded anyway (a JPEG at 1/8 scale), so an upload
costs no second decode.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pymager_tx.imaging import blurhash, geometry
from pymager_tx.imaging.pixels import eight_bit, flatten, has_alpha, resizable, to_srgb

# The small copy: its longer side.  Enough for 4x3 BlurHash components and
# for a colour count; a few thousand pixels, so pure Python stays cheap.
SUMMARY_SIDE = 32
# Transparency is shown over white in placeholders and counted so.
_BACKGROUND = (255, 255, 255)
# Colours the small copy is reduced to before the most common is taken:
# few enough that shades of one colour count together.
_DOMINANT_PALETTE = 8


@dataclass(frozen=True)
class Summary:
    blurhash: str
    dominant_color: str  # "#rrggbb"


def summarize(image: Image.Image, orientation: int, icc: bytes | None) -> Summary:
    """The summary of a loaded picture, stored turned by orientation."""
    small = small_upright(image, orientation, icc, SUMMARY_SIDE)
    across, down = blurhash.components_for(*small.size)
    return Summary(blurhash.encode(small, across, down), dominant_color(small))


def small_upright(image: Image.Image, orientation: int, icc: bytes | None, side: int) -> Image.Image:
    """An RGB copy of image whose longer side is at most side, upright,
    in sRGB, transparency flattened onto white."""
    source = resizable(image)
    width, height = source.size
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = source.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    small = to_srgb(eight_bit(geometry.transpose(small, orientation)), icc)
    if has_alpha(small):
        return flatten(small, _BACKGROUND)
    return small.convert("RGB")


def dominant_color(picture: Image.Image) -> str:
    """The most common colour once the picture is reduced to a few (median
    cut), as "#rrggbb"."""
    reduced = picture.quantize(colors=_DOMINANT_PALETTE, method=Image.Quantize.MEDIANCUT)
    # A palette picture's colours are palette indices.
    counts = [(count, index) for count, index in reduced.getcolors() or [] if isinstance(index, int)]
    _count, index = max(counts, default=(1, 0))
    palette = reduced.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3 : index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"
