"""The working copy: decode once, derive every size from a reduced copy, and
lose nothing visible (PSNR against deriving from the original)."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, JpegImagePlugin

from pymager_tx.core.model import ResizeMode, Size
from pymager_tx.imaging.encoders import webp_is_lossless
from pymager_tx.imaging.render import EncodeOptions, make_working_copy, render, working_copy_covers
from tests.images import (
    BLUE,
    FIXTURES,
    LIMITS,
    RED,
    SHARED_TESTDATA,
    animation,
    close_to,
    corner,
    encode,
    marked,
    mean_colour,
    opened,
    psnr,
    rgb_profile,
    spec,
    with_orientation,
)

OPTIONS = EncodeOptions()


def _photos() -> list[Path]:
    """The real photographs (800 px wide and more), each once by name."""
    found: dict[str, Path] = {}
    for folder in (FIXTURES, SHARED_TESTDATA / "pymager-java"):
        for path in sorted(folder.glob("*.jpg")):
            if opened(path.read_bytes()).width >= 800:
                found.setdefault(path.name, path)
    return list(found.values())


PHOTOS = _photos()
SIZES = [Size(150, 150), Size(300, 200), Size(400, 400)]


def enlarged(path: Path) -> bytes:
    """The photo at 3x (2400x1800), so the usual sizes are worth a working copy."""
    photo = opened(path.read_bytes()).convert("RGB")
    return encode(
        photo.resize((photo.width * 3, photo.height * 3), Image.Resampling.LANCZOS), "JPEG", quality=92
    )


def test_there_are_real_photos_to_measure() -> None:
    assert len(PHOTOS) >= 2


def test_deriving_from_the_working_copy_matches_the_original() -> None:
    scores = []
    for path in PHOTOS:
        sources = [
            (path.read_bytes(), [Size(100, 100), Size(150, 150), Size(120, 90)]),
            (enlarged(path), SIZES),
        ]
        for data, sizes in sources:
            working = make_working_copy(data, LIMITS, sizes, OPTIONS)
            assert working is not None
            source = opened(data).size
            for size in sizes:
                for mode in ResizeMode:
                    wanted = spec(size.width, size.height, "png", mode)
                    if mode is ResizeMode.SMART:
                        # Its subject is found in the original's pixels alone.
                        assert not working_copy_covers(working.width, working.height, *source, wanted)
                        continue
                    assert working_copy_covers(working.width, working.height, *source, wanted), (size, mode)
                    direct = opened(render(data, wanted, LIMITS, OPTIONS).data)
                    derived = opened(render(working.data, wanted, LIMITS, OPTIONS, source_size=source).data)
                    assert derived.size == direct.size
                    scores.append(psnr(direct, derived))
    print(
        f"PSNR over {len(scores)} derivations: median {statistics.median(scores):.1f}, min {min(scores):.1f}"
    )
    assert statistics.median(scores) >= 40, sorted(scores)
    assert min(scores) >= 35, sorted(scores)


def test_a_working_copy_is_smaller_and_large_enough() -> None:
    data = enlarged(PHOTOS[0])
    working = make_working_copy(data, LIMITS, SIZES, OPTIONS)
    assert working is not None
    # The most demanding: a 400x400 crop of 2400x1800 needs 800 of the 1800 rows.
    assert (working.width, working.height) == (1067, 800)
    image = opened(working.data)
    assert image.format == "JPEG" and image.mode == "RGB"
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0, as the renditions
    assert "exif" not in image.info and "icc_profile" not in image.info


def test_a_working_copy_keeps_the_chroma_the_renditions_keep() -> None:
    options = replace(OPTIONS, jpeg_subsampling="4:4:4")
    working = make_working_copy(enlarged(PHOTOS[0]), LIMITS, SIZES, options)
    assert working is not None
    image = opened(working.data)
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4


def test_none_when_not_worth_it() -> None:
    # 400x400 from an 800x600 photo needs more than half its rows.
    assert make_working_copy(PHOTOS[0].read_bytes(), LIMITS, SIZES, OPTIONS) is None
    assert make_working_copy(PHOTOS[0].read_bytes(), LIMITS, [], OPTIONS) is None


def test_none_for_animations() -> None:
    data = animation("GIF", [RED, BLUE], (400, 400))
    assert make_working_copy(data, LIMITS, [Size(10, 10)], OPTIONS) is None


def test_upright_srgb_and_with_alpha_as_png() -> None:
    source = marked((800, 400)).convert("RGBA")
    source.putpixel((400, 200), (0, 0, 0, 0))
    data = with_orientation(source, 6, "PNG")
    working = make_working_copy(data, LIMITS, [Size(50, 50)], OPTIONS)
    assert working is not None
    image = opened(working.data)
    assert image.format == "PNG" and image.mode == "RGBA"
    assert (image.width, image.height) == (100, 200)  # upright (tall), twice 50x50 for a crop
    assert close_to(corner(image, "tr")[:3], RED)

    orange = encode(Image.new("RGB", (400, 400), (200, 60, 40)), "PNG", icc_profile=rgb_profile())
    converted = make_working_copy(orange, LIMITS, [Size(50, 50)], OPTIONS)
    assert converted is not None
    assert close_to(mean_colour(opened(converted.data)), (219, 37, 13), 3)


def _lossless_webp_of(data: bytes) -> bool:
    return webp_is_lossless(render(data, spec(50, 50, "webp"), LIMITS, OPTIONS).data)


@pytest.mark.parametrize(
    ("format", "mode", "params", "copy_format"),
    [
        pytest.param("PNG", "RGB", {}, "PNG", id="opaque PNG"),
        pytest.param("PNG", "RGBA", {}, "PNG", id="PNG with alpha"),
        pytest.param("BMP", "RGB", {}, "PNG", id="BMP"),
        pytest.param("WEBP", "RGB", {"lossless": True}, "PNG", id="lossless WebP"),
        pytest.param("TIFF", "RGB", {}, "PNG", id="raw TIFF"),
        pytest.param("JPEG", "RGB", {"quality": 90}, "JPEG", id="JPEG"),
        pytest.param("WEBP", "RGB", {"quality": 90}, "JPEG", id="lossy WebP"),
        pytest.param("WEBP", "RGBA", {"quality": 90}, "PNG", id="lossy WebP with alpha"),
    ],
)
def test_a_webp_from_the_copy_is_lossless_exactly_when_one_from_the_source_is(
    format: str, mode: str, params: dict[str, object], copy_format: str
) -> None:
    # A screenshot or diagram stays lossless whichever of the two it is derived from.
    source = marked((800, 600)).convert(mode)
    if mode == "RGBA":
        source.paste((0, 0, 0, 0), (0, 0, 100, 100))
    data = encode(source, format, **params)
    working = make_working_copy(data, LIMITS, [Size(50, 50)], OPTIONS)
    assert working is not None
    assert opened(working.data).format == copy_format
    lossless = format in ("PNG", "BMP", "TIFF") or params.get("lossless") is True
    assert _lossless_webp_of(data) is lossless
    assert _lossless_webp_of(working.data) is lossless


class TestCovers:
    def test_needs_twice_the_output_in_the_region_used(self) -> None:
        crop = spec(100, 100, "png")
        # A square crop of 1000x500 uses 500x500; of a 400x200 copy, 200x200.
        assert working_copy_covers(400, 200, 1000, 500, crop)
        assert not working_copy_covers(398, 199, 1000, 500, crop)

    def test_fit_needs_twice_the_fitted_size(self) -> None:
        fit = spec(100, 100, "png", ResizeMode.FIT)
        assert working_copy_covers(200, 100, 1000, 500, fit)
        assert not working_copy_covers(180, 90, 1000, 500, fit)

    def test_pad_is_as_fit(self) -> None:
        pad = spec(100, 100, "png", ResizeMode.PAD)
        assert working_copy_covers(200, 100, 1000, 500, pad)
        assert not working_copy_covers(180, 90, 1000, 500, pad)

    def test_the_fitted_size_is_the_sources_however_the_copy_rounds(self) -> None:
        # 3001x2001 fits 300x300 as 300x200 (200.03); a copy of 2001x1330
        # would fit as 300x199 (199.4) on its own, but is planned on the source.
        fit = spec(300, 300, "png", ResizeMode.FIT)
        source = encode(marked((3001, 2001)), "PNG")
        copy = encode(marked((2001, 1330)), "PNG")
        assert working_copy_covers(2001, 1330, 3001, 2001, fit)
        assert opened(render(source, fit, LIMITS, OPTIONS).data).size == (300, 200)
        assert opened(render(copy, fit, LIMITS, OPTIONS, source_size=(3001, 2001)).data).size == (300, 200)
        assert opened(render(copy, fit, LIMITS, OPTIONS).data).size == (300, 199)

    def test_a_crop_from_the_copy_takes_the_sources_box(self) -> None:
        # The centred square of 3000x1000 is x 1000-2000; in a copy of a
        # third of its size, x 333.3-666.7: the red band at x 1000-1300 of
        # the source stays on the crop's left edge.
        picture = Image.new("RGB", (3000, 1000), BLUE)
        picture.paste(RED, (1000, 0, 1300, 1000))
        copy = picture.resize((1000, 333), Image.Resampling.LANCZOS)
        crop = spec(100, 100, "png")
        assert working_copy_covers(1000, 333, 3000, 1000, crop)
        made = opened(render(encode(copy, "PNG"), crop, LIMITS, OPTIONS, source_size=(3000, 1000)).data)
        assert made.size == (100, 100)
        assert close_to(made.convert("RGB").getpixel((10, 50)), RED, 8)
        assert close_to(made.convert("RGB").getpixel((60, 50)), BLUE, 8)

    def test_never_when_the_source_itself_is_too_small(self) -> None:
        assert not working_copy_covers(100, 100, 100, 100, spec(400, 400, "png"))
