"""EXIF orientation: all eight, in every format that carries it, applied
before the crop, and measured by where two coloured corners end up."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image, ImageOps

from pymager_tx.core.model import ResizeMode
from pymager_tx.imaging.render import probe
from tests.images import BLUE, LIMITS, RED, close_to, corner, derive, encode, marked, opened, with_orientation

# Where the stored top-left (red) and top-right (blue) corners are displayed.
DISPLAYED = {
    1: ("tl", "tr"),
    2: ("tr", "tl"),
    3: ("br", "bl"),
    4: ("bl", "br"),
    5: ("tl", "bl"),
    6: ("tr", "br"),
    7: ("br", "tr"),
    8: ("bl", "tl"),
}
FORMATS = ["JPEG", "WEBP", "TIFF", "PNG"]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_each_orientation_is_applied(format: str, orientation: int) -> None:
    data = with_orientation(marked((120, 80)), orientation, format)
    # Pillow reads the orientation from every one of these formats (PNG: eXIf).
    assert Image.open(BytesIO(data)).getexif().get(0x0112) == orientation
    rotated = orientation >= 5
    width, height = (40, 60) if rotated else (60, 40)
    image = derive(data, width, height, "png")
    assert image.size == (width, height)
    red_corner, blue_corner = DISPLAYED[orientation]
    assert close_to(corner(image, red_corner), RED), corner(image, red_corner)
    assert close_to(corner(image, blue_corner), BLUE), corner(image, blue_corner)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_probe_reports_the_displayed_size(format: str, orientation: int) -> None:
    info = probe(with_orientation(marked((120, 80)), orientation, format), LIMITS)
    assert (info.width, info.height) == ((80, 120) if orientation >= 5 else (120, 80))


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
# A smart crop goes where the picture's content is: tests/unit/test_smart_crop.py.
@pytest.mark.parametrize("mode", [mode for mode in ResizeMode if mode is not ResizeMode.SMART])
def test_matches_pillows_own_transpose_then_resize(orientation: int, mode: ResizeMode) -> None:
    # The resize runs on the stored picture and the transpose after it; the
    # result must be what transposing first gives, crop included.
    source = marked((300, 120))
    data = with_orientation(source, orientation, "PNG")
    image = derive(data, 50, 50, "png", mode)
    upright = ImageOps.exif_transpose(opened(data))
    if mode is ResizeMode.CROP:
        expected = ImageOps.fit(upright, (50, 50), Image.Resampling.LANCZOS)
    else:
        expected = ImageOps.pad(upright, (50, 50), Image.Resampling.LANCZOS, color=(255, 255, 255))
    if mode is ResizeMode.FIT:
        expected = ImageOps.contain(upright, (50, 50), Image.Resampling.LANCZOS)
    assert image.size == expected.size
    for which in ("tl", "tr", "bl", "br"):
        assert close_to(corner(image, which), corner(expected, which), 12), which


def test_jpeg_orientation_with_draft_scaling() -> None:
    # A large JPEG is decoded at 1/8 scale: the box must follow the draft.
    data = with_orientation(marked((1600, 800)), 6, "JPEG")
    image = derive(data, 50, 100, "jpg")
    assert close_to(corner(image, "tr"), RED)
    assert close_to(corner(image, "br"), BLUE)


def test_applied_before_cropping() -> None:
    # Displayed upright the picture is tall; a square crop keeps its middle,
    # so neither coloured corner survives.
    data = with_orientation(marked((200, 100)), 6, "JPEG")
    image = derive(data, 50, 50, "png")
    for which in ("tl", "tr", "bl", "br"):
        assert close_to(corner(image, which), (128, 128, 128), 20), which


def test_an_invalid_orientation_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 9
    image = derive(encode(marked(), "JPEG", exif=exif.tobytes()), 60, 40, "png")
    assert close_to(corner(image, "tl"), RED)
