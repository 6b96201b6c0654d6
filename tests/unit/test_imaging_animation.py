"""Animated GIF and WebP: kept animated within the frame budget, first frame otherwise."""

from __future__ import annotations

import struct

import pytest
from PIL import Image

from pymager_tx.core.errors import DerivationTooCostly
from pymager_tx.core.formats import format_named
from pymager_tx.core.model import ResizeMode
from pymager_tx.imaging.encoders import Encoding, encode_animation
from pymager_tx.imaging.gif import gif_canvas
from pymager_tx.imaging.render import EncodeOptions, render
from tests.images import (
    BLUE,
    GREEN,
    LIMITS,
    RED,
    animation,
    close_to,
    corner,
    frames_of,
    limits,
    opened,
    spec,
)

COLOURS = [RED, GREEN, BLUE]
DURATIONS = [100, 200, 300]
ENCODING = Encoding(jpeg_quality=85, jpeg_progressive=True, jpeg_subsampling="4:2:0", webp_quality=80)


def animated(format: str, **params: object) -> bytes:
    if format == "WEBP":
        params.setdefault("lossless", True)
    return animation(format, COLOURS, (60, 40), DURATIONS, loop=0, **params)


@pytest.mark.parametrize("source", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize("target", ["gif", "webp"])
def test_stays_animated_with_its_timing(source: str, target: str) -> None:
    rendered = render(animated(source), spec(30, 30, target), LIMITS, EncodeOptions())
    image = opened(rendered.data)
    assert getattr(image, "n_frames", 1) == 3
    assert image.info.get("loop") == 0
    frames = frames_of(image)
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert frame.size == (30, 30)
        assert close_to(frame.getpixel((20, 20))[:3], colour), (frame.getpixel((20, 20)), colour)
    opened_again = opened(rendered.data)
    durations = []
    for index in range(3):
        opened_again.seek(index)
        opened_again.load()  # WebP sets the duration when the frame is decoded
        durations.append(opened_again.info.get("duration"))
    assert durations == DURATIONS


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_every_frame_is_resized_the_same_way(mode: ResizeMode) -> None:
    rendered = render(animated("GIF"), spec(30, 30, "gif", mode), LIMITS, EncodeOptions())
    for frame in frames_of(opened(rendered.data)):
        assert frame.size == {ResizeMode.FIT: (30, 20)}.get(mode, (30, 30))
        if not mode.focused:
            # The white marker (top-left quarter) is kept whole by fit and pad.
            top = 5 if mode is ResizeMode.PAD else 0
            assert close_to(frame.getpixel((2, top + 2))[:3], (255, 255, 255))


def test_a_gif_without_a_loop_count_plays_once() -> None:
    data = animation("GIF", COLOURS, (30, 30), DURATIONS)
    assert "loop" not in opened(data).info
    assert "loop" not in opened(render(data, spec(20, 20, "gif"), LIMITS, EncodeOptions()).data).info
    webp = opened(render(data, spec(20, 20, "webp"), LIMITS, EncodeOptions()).data)
    assert webp.info["loop"] == 1


def test_transparent_frames_stay_transparent() -> None:
    frames = [Image.new("RGBA", (40, 40), (0, 0, 0, 0)) for _ in range(2)]
    frames[0].paste((255, 0, 0, 255), (0, 0, 20, 40))
    frames[1].paste((0, 0, 255, 255), (20, 0, 40, 40))
    buffer_data = _save(frames, "GIF", disposal=2)
    for target in ("gif", "webp"):
        out = frames_of(opened(render(buffer_data, spec(40, 40, target), LIMITS, EncodeOptions()).data))
        assert out[0].getpixel((5, 20)) == (255, 0, 0, 255), target
        assert out[0].getpixel((35, 20))[3] == 0, target
        assert out[1].getpixel((5, 20))[3] == 0, target  # the red half does not linger
        assert close_to(out[1].getpixel((35, 20)), (0, 0, 255, 255)), target


@pytest.mark.parametrize("target", ["jpg", "png", "bmp", "tiff", "avif"])
def test_still_targets_get_the_first_frame(target: str) -> None:
    image = opened(render(animated("GIF"), spec(30, 30, target), LIMITS, EncodeOptions()).data)
    assert getattr(image, "n_frames", 1) == 1
    assert close_to(image.convert("RGB").getpixel((20, 20)), RED)


@pytest.mark.parametrize(
    "budget",
    [{"max_frames": 2}, {"max_animation_pixels": 3 * 60 * 40 - 1}],
)
def test_past_the_budget_the_first_frame_only(budget: dict[str, int]) -> None:
    rendered = render(animated("GIF"), spec(30, 30, "gif"), limits(**budget), EncodeOptions())
    image = opened(rendered.data)
    assert getattr(image, "n_frames", 1) == 1
    assert close_to(image.convert("RGB").getpixel((20, 20)), RED)


def test_exactly_at_the_budget_stays_animated() -> None:
    budget = limits(max_frames=3, max_animation_pixels=3 * 60 * 40)
    assert opened(render(animated("WEBP"), spec(30, 30, "webp"), budget, EncodeOptions()).data).n_frames == 3


def test_the_output_counts_against_the_budget_too() -> None:
    # 3 frames of 60x40 (7200 source pixels) enlarged: the output decides.
    budget = limits(max_animation_pixels=3 * 100 * 100)
    within = opened(render(animated("GIF"), spec(100, 100, "gif"), budget, EncodeOptions()).data)
    past = opened(
        render(
            animated("GIF"),
            spec(100, 100, "gif"),
            limits(max_animation_pixels=3 * 100 * 100 - 1),
            EncodeOptions(),
        ).data
    )
    assert within.n_frames == 3
    assert getattr(past, "n_frames", 1) == 1


def late_frames_reaching_far(width: int, height: int) -> bytes:
    """A 3-frame 16x16 GIF whose later frames declare width x height (the
    shape of a small file that decodes to gigabytes)."""
    data = animation("GIF", COLOURS, (16, 16))
    descriptor = b",\x00\x00\x00\x00" + struct.pack("<HH", 16, 16)
    first = data.index(descriptor)
    head, tail = data[: first + len(descriptor)], data[first + len(descriptor) :]
    return head + tail.replace(descriptor, b",\x00\x00\x00\x00" + struct.pack("<HH", width, height))


def test_the_canvas_every_gif_frame_covers() -> None:
    assert gif_canvas(animated("GIF")) == (60, 40)
    assert gif_canvas(late_frames_reaching_far(8000, 7999)) == (8000, 7999)
    assert gif_canvas(late_frames_reaching_far(8000, 7999)[:-40]) == (8000, 7999)  # truncated


def test_later_gif_frames_count_at_the_size_they_declare() -> None:
    # 3 x 8000x7999 is far past the budget though each frame is within
    # max_pixels: the first frame only, and no large frame is decoded.
    hostile = late_frames_reaching_far(8000, 7999)
    image = opened(render(hostile, spec(30, 30, "gif"), LIMITS, EncodeOptions()).data)
    assert getattr(image, "n_frames", 1) == 1
    assert close_to(image.convert("RGB").getpixel((20, 20)), RED)


def test_encoding_can_be_given_up_between_frames() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in COLOURS]
    seen: list[int] = []

    def after_frame(index: int) -> None:
        seen.append(index)
        if index == 1:
            raise DerivationTooCostly("past the budget")

    with pytest.raises(DerivationTooCostly):
        encode_animation(frames, DURATIONS, 0, format_named("gif"), ENCODING, after_frame)
    assert seen == [0, 1]


def test_orientation_applies_to_every_frame() -> None:
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down
    data = animated("WEBP", exif=exif.tobytes())
    for frame in frames_of(opened(render(data, spec(60, 40, "webp"), LIMITS, EncodeOptions()).data)):
        assert close_to(corner(frame, "br")[:3], (255, 255, 255))


def _save(frames: list[Image.Image], format: str, **params: object) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    frames[0].save(buffer, format, save_all=True, append_images=frames[1:], duration=100, **params)
    return buffer.getvalue()
