"""
Where each output pixel comes from: resize plans for the crop, fit and pad
modes, the EXIF orientations, and how much a decoder may shrink first.

Pure arithmetic on sizes and boxes, no pixels, so every rule here is cheap to
test on its own.  Coordinates are floats in source pixels; Pillow's resize()
takes a float box and samples it exactly, so a crop never costs a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from pymager_tx.core.model import ResizeMode, Size

# Decode and reduce to at least this many times the target size before the
# final Lanczos filter, as Pillow's own thumbnail() does: the integer steps
# (JPEG DCT scaling, reduce()) are fast but coarse.
REDUCING_GAP = 2.0
ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})
# What turns a stored picture upright, by EXIF orientation (as exif_transpose).
_TRANSPOSES: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Plan:
    """Resize box (of the upright source) to size, then centre the result on
    canvas (pad mode) or use it as it is (canvas None)."""

    box: Box
    size: tuple[int, int]
    canvas: tuple[int, int] | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        return self.canvas or self.size

    @property
    def reduction(self) -> float:
        """Output pixels per box pixel, on the side that needs the most."""
        left, top, right, bottom = self.box
        return max(self.size[0] / (right - left), self.size[1] / (bottom - top))


def upright_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = stored
    return (height, width) if orientation in ROTATED_ORIENTATIONS else (width, height)


def plan(
    source: tuple[int, int],
    target: Size,
    mode: ResizeMode,
    upscale: bool,
    focus: tuple[float, float] | None = None,
) -> Plan:
    """How to bring an upright source of this size to target in this mode;
    a crop keeps focus (relative to the source, 0..1) as near its centre as
    the source allows, and is centred without one."""
    width, height = source
    if mode.focused:
        return _crop_plan(width, height, target, upscale, focus or (0.5, 0.5))
    scale = min(target.width / width, target.height / height)
    if not upscale:
        scale = min(scale, 1.0)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = (target.width, target.height) if mode is ResizeMode.PAD else None
    return Plan((0.0, 0.0, float(width), float(height)), fitted, canvas)


def _crop_plan(width: int, height: int, target: Size, upscale: bool, focus: tuple[float, float]) -> Plan:
    # The largest box with the target's aspect ratio (as ImageOps.fit),
    # centred on the focus, then moved back inside the source where needed.
    box_width, box_height = crop_box_size(width, height, target)
    left = _clamped(focus[0] * width - box_width / 2, width - box_width)
    top = _clamped(focus[1] * height - box_height / 2, height - box_height)
    box = (left, top, left + box_width, top + box_height)
    size = (target.width, target.height)
    if not upscale and box_width < target.width:
        # Never enlarge: the box itself, at one source pixel per output pixel.
        size = (max(1, round(box_width)), max(1, round(box_height)))
    return Plan(box, size)


def crop_box_size(width: int, height: int, target: Size) -> tuple[float, float]:
    """The largest box of a width x height source with target's aspect ratio."""
    aspect = target.width / target.height
    if width / height > aspect:
        return height * aspect, float(height)
    return float(width), width / aspect


def _clamped(start: float, most: float) -> float:
    return min(max(start, 0.0), max(most, 0.0))


def whole(source: tuple[int, int], size: tuple[int, int]) -> Plan:
    """The whole source, resized to size (a working copy)."""
    return Plan((0.0, 0.0, float(source[0]), float(source[1])), size)


def stored_box(box: Box, stored: tuple[int, int], orientation: int) -> Box:
    """The box of upright coordinates, in the coordinates of the picture as
    stored, so that the resize runs before the (then small) transpose."""
    width, height = stored
    left, top, right, bottom = box
    corners = [_stored_point(x, y, width, height, orientation) for x, y in ((left, top), (right, bottom))]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _stored_point(x: float, y: float, width: int, height: int, orientation: int) -> tuple[float, float]:
    # width, height: the stored size.  Each case inverts the transpose above.
    if orientation == 2:
        return width - x, y
    if orientation == 3:
        return width - x, height - y
    if orientation == 4:
        return x, height - y
    if orientation == 5:
        return y, x
    if orientation == 6:
        return y, height - x
    if orientation == 7:
        return width - y, height - x
    if orientation == 8:
        return width - y, x
    return x, y


def stored_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size to resize to before transposing, so the result is size."""
    return upright_size(size, orientation)


def transpose(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSES.get(orientation)
    return image if method is None else image.transpose(method)


def scaled_box(box: Box, stored: tuple[int, int], decoded: tuple[int, int]) -> Box:
    """The box in a picture decoded smaller than stored (JPEG draft)."""
    x_scale, y_scale = decoded[0] / stored[0], decoded[1] / stored[1]
    left, top, right, bottom = box
    return left * x_scale, top * y_scale, right * x_scale, bottom * y_scale


def draft_request(stored: tuple[int, int], reduction: float) -> tuple[int, int]:
    """The size to ask a JPEG decoder for: the box still comes out at least
    REDUCING_GAP times the output size, so the final filter has pixels."""
    factor = min(1.0, reduction * REDUCING_GAP)
    return max(1, math.ceil(stored[0] * factor)), max(1, math.ceil(stored[1] * factor))


def working_scale(source: tuple[int, int], sizes: list[Size]) -> float:
    """Scale of a working copy from which every size, in every mode, can be
    derived with the reducing gap: the crop of the most demanding size."""
    width, height = source
    return max(REDUCING_GAP * max(size.width / width, size.height / height) for size in sizes)


def covers(working: tuple[int, int], source: tuple[int, int], target: Size, mode: ResizeMode) -> bool:
    """Whether a working copy (the whole source, reduced) leaves at least
    REDUCING_GAP working pixels per output pixel for this derivation, with
    the same output size as the source would give.

    Upscaling never matters: where the working copy covers a derivation, the
    source has more than twice the output pixels, so nothing is enlarged."""
    from_source = plan(source, target, mode, upscale=True)
    from_working = plan(working, target, mode, upscale=True)
    if from_source.size != from_working.size:
        return False  # rounding of the fitted side differs: not the same image
    # Tolerate float noise only, never a real shortfall of pixels.
    return from_working.reduction * REDUCING_GAP <= 1.0 + 1e-9
