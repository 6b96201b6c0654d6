"""Focal points, smart crops and the upload summary, at the imaging level:
the geometry of a crop around a point, where attention puts the crop, the
BlurHash against the reference implementation's known answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image, ImageDraw

from pymager_tx.adapters.sql.admin_txn import Rendition
from pymager_tx.admin.prune import stale
from pymager_tx.core.errors import InvalidFocalPoint
from pymager_tx.core.model import FocalPoint, ResizeMode, Size, parse_derived_name
from pymager_tx.imaging import blurhash, geometry
from pymager_tx.imaging.attention import best_focus
from pymager_tx.imaging.render import EncodeOptions, probe, render
from tests.images import LIMITS, RED, close_to, derive, encode, mean_colour, opened, spec, with_orientation

GREY = (128, 128, 128)


def subject(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    picture = Image.new("RGB", size, GREY)
    ImageDraw.Draw(picture).rectangle(box, fill=RED)
    return picture


@pytest.mark.parametrize(
    ("focus", "box"),
    [
        (None, (100.0, 0.0, 300.0, 200.0)),  # centred, as before focal points
        ((0.5, 0.5), (100.0, 0.0, 300.0, 200.0)),
        ((0.3, 0.9), (20.0, 0.0, 220.0, 200.0)),  # only x can move
        ((0.0, 0.5), (0.0, 0.0, 200.0, 200.0)),  # clamped at the left
        ((1.0, 0.5), (200.0, 0.0, 400.0, 200.0)),  # and at the right
    ],
)
def test_a_crop_centres_the_focal_point_as_far_as_the_picture_allows(
    focus: tuple[float, float] | None, box: tuple[float, float, float, float]
) -> None:
    assert geometry.plan((400, 200), Size(100, 100), ResizeMode.CROP, True, focus).box == box


def test_fit_and_pad_ignore_the_focal_point() -> None:
    for mode in (ResizeMode.FIT, ResizeMode.PAD):
        assert geometry.plan((400, 200), Size(100, 100), mode, True, (0.0, 0.0)) == geometry.plan(
            (400, 200), Size(100, 100), mode, True
        )


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan"), True, "0.5"])
def test_a_focal_point_is_inside_the_picture(value: object) -> None:
    with pytest.raises(InvalidFocalPoint):
        FocalPoint(value, 0.5)  # type: ignore[arg-type]


def test_smart_is_a_mode_of_the_derived_name() -> None:
    parsed = parse_derived_name("photo-2-200x100-smart.jpg")
    assert (parsed.image_id.value, parsed.mode) == ("photo-2", ResizeMode.SMART)
    assert spec(200, 100, "jpg", ResizeMode.SMART).variant == "200x100-smart.jpeg"


def test_attention_on_a_flat_picture_is_the_centre() -> None:
    assert best_focus([0.0] * 80 * 40, (80, 40), (0.5, 1.0)) == (0.5, 0.5)


def test_attention_centres_on_the_subject_where_it_can() -> None:
    scores = [0.0] * 80 * 40
    for y in range(10, 20):
        for x in range(30, 34):
            scores[y * 80 + x] = 1.0
    x, y = best_focus(scores, (80, 40), (0.5, 1.0))
    assert (x, y) == (32 / 80, 0.5)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_smart_crop_finds_the_subject_of_a_turned_photo(orientation: int) -> None:
    # Displayed 400x200 with the subject near the left edge, whatever the
    # EXIF orientation it is stored with.
    displayed = subject((400, 200), (30, 80, 70, 120))
    inverse = {
        1: None,
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    method = inverse[orientation]
    stored = displayed if method is None else displayed.transpose(method)
    image = derive(with_orientation(stored, orientation, "PNG"), 100, 100, "png", ResizeMode.SMART)
    assert close_to(mean_colour(image, (20, 45, 30, 55)), RED), mean_colour(image)


def test_a_smart_crop_of_a_jpeg_decoded_at_a_reduced_scale() -> None:
    data = encode(subject((1600, 800), (1400, 300, 1500, 400)), "JPEG", quality=95)
    image = derive(data, 100, 100, "png", ResizeMode.SMART)
    # The right half (the box's edge), where the subject spans 75..87 by 37..50.
    assert close_to(mean_colour(image, (77, 39, 86, 49)), RED), mean_colour(image)


def test_a_smart_crop_with_a_focal_point_is_that_crop() -> None:
    data = encode(subject((400, 200), (30, 80, 70, 120)), "PNG")
    focused = replace(spec(100, 100, "png", ResizeMode.SMART), focus=FocalPoint(1.0, 0.5))
    smart = opened(render(data, focused, LIMITS, EncodeOptions()).data)
    crop = opened(render(data, replace(focused, mode=ResizeMode.CROP), LIMITS, EncodeOptions()).data)
    assert smart.tobytes() == crop.tobytes()


def test_the_blurhash_of_black_is_the_reference_answer() -> None:
    # woltapp/blurhash encodes a black picture with 4x3 components so.
    assert blurhash.encode(Image.new("RGB", (32, 24)), 4, 3) == "L00000fQfQfQfQfQfQfQfQfQfQfQ"


def test_a_blurhash_decodes_to_the_pictures_colours() -> None:
    halves = Image.new("RGB", (32, 32), RED)
    ImageDraw.Draw(halves).rectangle((0, 16, 31, 31), fill=(0, 0, 255))
    placeholder = blurhash.decode(blurhash.encode(halves, 3, 4), 16, 16)
    # A blur: red at the top, blue at the bottom, each with some of the other.
    top_red, _, top_blue = mean_colour(placeholder, (0, 0, 16, 4))[:3]
    bottom_red, _, bottom_blue = mean_colour(placeholder, (0, 12, 16, 16))[:3]
    assert top_red > top_blue + 100 and bottom_blue > bottom_red + 100, (
        top_red,
        top_blue,
        bottom_red,
        bottom_blue,
    )


def test_the_probe_summarises_the_displayed_picture() -> None:
    # Stored turned a quarter (EXIF 6): displayed tall, so more components down.
    info = probe(with_orientation(subject((300, 100), (0, 0, 299, 99)), 6, "JPEG"), LIMITS)
    assert info.summary is not None
    assert blurhash.components_of(info.summary.blurhash) == (3, 4)
    assert close_to(tuple(int(info.summary.dominant_color[i : i + 2], 16) for i in (1, 3, 5)), RED)


def test_transparency_is_summarised_over_white() -> None:
    info = probe(encode(Image.new("RGBA", (40, 40), (255, 0, 0, 0)), "PNG"), LIMITS)
    assert info.summary is not None and info.summary.dominant_color == "#ffffff"


def test_prune_knows_smart_renditions_by_their_size() -> None:
    renditions = [
        Rendition("a", variant, "key", 1) for variant in ("200x200-smart.jpeg", "100x100.png", "working")
    ]
    assert [r.variant for r in stale(renditions, frozenset({Size(100, 100)}))] == ["200x200-smart.jpeg"]
