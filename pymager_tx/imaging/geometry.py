"""
Where each output pixel comes from: resize plans for the crop, fit and pad
modes, the EXIF orientations, and how much a decoder may shrink first.

Pure arithmetic on sizes and boxes, no pixels, so every rule here is cheap to
test on its own.  Coordinates are floats in source pixels; Pillow's resize()
takes a float box and samples it exactly, so a crop never costs a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image

from pymager_tx.core.model import ResizeMode, Size

# Decode and reduce to at least this many times the target size before the
# final Lanczos filter, as Pillow's own thumbnail() does: the integer steps
# (JPEG DCT scaling, reduce()) are fast but coarse.
REDUCING_GAP = 2.0
# Except at the JPEG decoder's 1/2 scale, whose four-point inverse DCT filters
# nearly as well as Lanczos: decoding a 1494 px working copy at 1/2 for a 420 px
# output (1.78 pixels per output pixel) instead of whole and filtering 3.56:1
# costs 0.1-0.2 dB against the ideal and halves the render (bench/RESULTS.md,
# stop 22).  The coarser scales keep too few coefficients: 1/4 at 1.75 lost
# 0.8 dB in the same measurement.
HALF_SCALE_GAP = 1.75
_DCT_SCALES = (8, 4, 2)
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


def likely_drafts(
    stored: tuple[int, int], orientation: int, sizes: Iterable[Size], upscale: bool
) -> list[tuple[int, int]]:
    """The draft_requests that sizes, cropped or fitted, would make of a
    source stored this size, those most of them make first (the finer of
    two as common): the scales worth decoding an upload at, so that its
    first renditions find it decoded."""
    upright = upright_size(stored, orientation)
    counts: dict[tuple[int, int], int] = {}
    for size in sizes:
        for mode in (ResizeMode.CROP, ResizeMode.FIT):
            request = draft_request(stored, plan(upright, size, mode, upscale).reduction)
            counts[request] = counts.get(request, 0) + 1
    return sorted(counts, key=lambda request: (counts[request], request), reverse=True)


def draft_request(stored: tuple[int, int], reduction: float) -> tuple[int, int]:
    """The size to ask a JPEG decoder for (Image.draft), so that it decodes
    at the smallest DCT scale (1/8, 1/4, 1/2) that still leaves the box at
    least REDUCING_GAP times the output size (HALF_SCALE_GAP at 1/2), so the
    final filter has pixels; stored itself when no scale does.

    Pillow decodes at the largest power of two that stored // request
    allows, so the request is stored // scale, never rounded up."""
    for scale in _DCT_SCALES:
        gap = HALF_SCALE_GAP if scale == 2 else REDUCING_GAP
        if reduction * gap * scale <= 1.0 + 1e-9:
            return max(1, stored[0] // scale), max(1, stored[1] // scale)
    return stored


def working_scale(source: tuple[int, int], sizes: list[Size]) -> float:
    """Scale of a working copy from which every size, in every mode, can be
    derived with the reducing gap: the crop of the most demanding size."""
    width, height = source
    return max(REDUCING_GAP * max(size.width / width, size.height / height) for size in sizes)


def covers(working: tuple[int, int], source: tuple[int, int], target: Size, mode: ResizeMode) -> bool:
    """Whether a working copy (the whole source, reduced) leaves at least
    REDUCING_GAP working pixels per output pixel for this derivation, when
    it is planned on the source and sampled from the copy (on_copy), so that
    its output is the one the source would give.

    Upscaling never matters: where the working copy covers a derivation, the
    source has more than twice the output pixels, so nothing is enlarged."""
    from_working = on_copy(plan(source, target, mode, upscale=True), source, working)
    # Tolerate float noise only, never a real shortfall of pixels.
    return from_working.reduction * REDUCING_GAP <= 1.0 + 1e-9


def on_copy(planned: Plan, source: tuple[int, int], copy: tuple[int, int]) -> Plan:
    """planned, made for an upright source, as a plan for a reduced copy of
    it: the same output size and canvas, the box in the copy's pixels.  The
    output's size never depends on how the copy's sides were rounded."""
    x_scale, y_scale = copy[0] / source[0], copy[1] / source[1]
    left, top, right, bottom = planned.box
    return Plan(
        (left * x_scale, top * y_scale, right * x_scale, bottom * y_scale), planned.size, planned.canvas
    )
