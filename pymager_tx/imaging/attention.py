"""
Where a smart crop goes when the original has no focal point: the crop box
(its size is the plain crop's) placed where the picture holds the most
"interest", as libvips' `attention` strategy does.

Interest is measured on a small upright copy of the pixels already decoded
for the derivation, per pixel, as the sum of three things the eye goes to:

- edges: the Laplacian of the luminance (detail, text, outlines);
- saturation: vivid colour, where the pixel is not too dark to show it;
- skin tones: colours near a reference skin hue (faces, hands).

A flat background scores nothing.  The box slides along its one free axis
(a crop fills the other) and the position with the most interest inside
wins; ties go to the position nearest the centre, so a picture with no
clear subject is cropped as a plain crop would be.
"""

from __future__ import annotations

from PIL import Image, ImageFile, ImageFilter

from pymager_tx.core.model import ResizeMode, Size
from pymager_tx.imaging import geometry
from pymager_tx.imaging.geometry import Plan
from pymager_tx.imaging.summary import small_upright
from pymager_tx.imaging.untrusted import decoding, is_jpeg

# The small copy's longer side: fine enough for a subject a tenth of the
# picture wide, small enough for pure Python (a few thousand pixels).
ATTENTION_SIDE = 80
# Pixels darker than this (0..255 value) show no colour worth a look.
_DARK = 40
# Skin: the chroma ranges of skin of every complexion in YCbCr (Chai and
# Ngan's classic classifier); greys, whites and saturated reds fall outside.
_SKIN_CB = (77, 127)
_SKIN_CR = (133, 173)
_SKIN_WEIGHT = 1.5
_TIE = 1e-9


def interest(picture: Image.Image) -> list[float]:
    """Interest per pixel of an RGB picture, row by row."""
    edges = picture.convert("L").filter(ImageFilter.FIND_EDGES).tobytes()
    hsv = picture.convert("HSV").tobytes()
    ycbcr = picture.convert("YCbCr").tobytes()
    width, height = picture.size
    scores: list[float] = []
    for index, edge in enumerate(edges):
        y, x = divmod(index, width)
        # Pillow copies the outermost pixels unfiltered: they are no edge.
        inside = 0 < x < width - 1 and 0 < y < height - 1
        score = edge / 255 if inside else 0.0
        if hsv[index * 3 + 2] >= _DARK:
            score += hsv[index * 3 + 1] / 255
            blue_difference, red_difference = ycbcr[index * 3 + 1], ycbcr[index * 3 + 2]
            if _SKIN_CB[0] <= blue_difference <= _SKIN_CB[1] and _SKIN_CR[0] <= red_difference <= _SKIN_CR[1]:
                score += _SKIN_WEIGHT
        scores.append(score)
    return scores


def best_focus(scores: list[float], size: tuple[int, int], box: tuple[float, float]) -> tuple[float, float]:
    """The centre (relative, 0..1) of the box (relative width and height)
    that holds the most of scores (a width x height grid, row by row)."""
    width, height = size
    box_width, box_height = box
    if box_width < 1.0 - _TIE:
        columns = [sum(scores[y * width + x] for y in range(height)) for x in range(width)]
        return _best_along(columns, box_width), 0.5
    if box_height < 1.0 - _TIE:
        rows = [sum(scores[y * width : (y + 1) * width]) for y in range(height)]
        return 0.5, _best_along(rows, box_height)
    return 0.5, 0.5


def _best_along(sums: list[float], share: float) -> float:
    """The centre of the window of share of the line whose sum is largest.
    Of windows as good (a subject smaller than the window fits in several),
    the one centred nearest the subject: the centroid of the interest they
    cover; with no interest at all, the middle."""
    count = len(sums)
    window = max(1, min(count, round(share * count)))
    totals = [sum(sums[:window])]
    for start in range(1, count - window + 1):
        totals.append(totals[-1] + sums[start + window - 1] - sums[start - 1])
    best = max(totals)
    candidates = [start for start, total in enumerate(totals) if total >= best - _TIE * max(1.0, best)]
    covered = range(candidates[0], candidates[-1] + window)
    weight = sum(sums[index] for index in covered)
    centroid = count / 2
    if weight > _TIE:
        centroid = sum((index + 0.5) * sums[index] for index in covered) / weight
    chosen = min(candidates, key=lambda start: abs(start + window / 2 - centroid))
    return (chosen + window / 2) / count


def attention_focus(
    image: Image.Image, orientation: int, icc: bytes | None, upright: tuple[int, int], target: Size
) -> tuple[float, float]:
    """The focal point (relative to the upright picture) a smart crop of a
    loaded picture to target should keep."""
    box_width, box_height = geometry.crop_box_size(upright[0], upright[1], target)
    small = small_upright(image, orientation, icc, ATTENTION_SIDE)
    return best_focus(interest(small), small.size, (box_width / upright[0], box_height / upright[1]))


def smart_plan(
    image: ImageFile.ImageFile,
    plan: Plan,
    upright: tuple[int, int],
    orientation: int,
    target: Size,
    upscale: bool,
) -> Plan:
    """plan (a centred crop) moved to where the picture's interest is.
    Decodes image as the resize will need it (a JPEG at the scale plan's
    reduction allows), so the resize that follows decodes nothing again;
    image.size is then the decoded size, not the stored one."""
    icc = image.info.get("icc_profile")
    with decoding():
        if is_jpeg(image):
            image.draft(None, geometry.draft_request(image.size, plan.reduction))
        image.load()
        focus = attention_focus(image, orientation, icc if isinstance(icc, bytes) else None, upright, target)
    return geometry.plan(upright, target, ResizeMode.SMART, upscale, focus)
