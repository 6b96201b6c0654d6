"""The [images] settings of imaging, and the resize arithmetic of geometry."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.core.model import ResizeMode, Size
from pymager_tx.imaging.geometry import draft_request, plan, stored_box, working_scale
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions
from pymager_tx.process.wiring import image_policy
from tests.images import encode


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "pymager.toml"
    path.write_text("[images]\n" + text, encoding="utf-8")
    return load_settings(path).images


def test_defaults() -> None:
    images = load_settings().images
    assert images.background_rgb == (255, 255, 255)
    assert (images.jpeg_progressive, images.jpeg_subsampling, images.upscale) == (True, "4:2:0", True)
    assert images.jpeg_progressive_min_pixels == 250_000
    assert (images.max_frames, images.max_animation_pixels) == (500, 100_000_000)
    assert images.derivation_time_budget == 20.0


def test_every_imaging_setting_reaches_the_service(tmp_path: Path) -> None:
    path = tmp_path / "pymager.toml"
    path.write_text(
        "[images]\n"
        'allowed_sizes = ["10x20"]\nmax_upload_bytes = 1000\nmax_pixels = 5000\ndecoders = ["PNG"]\n'
        "max_frames = 7\nmax_animation_pixels = 800\nderivation_time_budget = 1.5\n"
        'jpeg_quality = 41\nwebp_quality = 42\nbackground = "#010203"\njpeg_progressive = false\n'
        'jpeg_progressive_min_pixels = 9\njpeg_subsampling = "4:4:4"\nupscale = false\n',
        encoding="utf-8",
    )
    policy = image_policy(load_settings(path))
    assert policy.allowed_sizes == frozenset({Size(10, 20)})
    assert policy.max_upload_bytes == 1000
    assert policy.limits == DecodeLimits(
        max_pixels=5000, decoders=("PNG",), max_frames=7, max_animation_pixels=800, time_budget=1.5
    )
    assert policy.encoding == EncodeOptions(
        jpeg_quality=41,
        webp_quality=42,
        background=(1, 2, 3),
        jpeg_progressive=False,
        jpeg_progressive_min_pixels=9,
        jpeg_subsampling="4:4:4",
        upscale=False,
    )


def test_background_is_a_hex_colour(tmp_path: Path) -> None:
    assert settings_from(tmp_path, 'background = "#0A80fF"\n').background_rgb == (10, 128, 255)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('background = "white"\n', r"images\.background: must be a colour"),
        ('background = "#fff"\n', r"images\.background"),
        ('jpeg_subsampling = "4:1:1"\n', r"images\.jpeg_subsampling"),
        ("jpeg_progressive = 1\n", r"images\.jpeg_progressive"),
        ("jpeg_progressive_min_pixels = -1\n", r"images\.jpeg_progressive_min_pixels"),
        ("upscale = 'no'\n", r"images\.upscale"),
        ("max_frames = 0\n", r"images\.max_frames"),
        ("max_animation_pixels = 0\n", r"images\.max_animation_pixels"),
        ("derivation_time_budget = 0\n", r"images\.derivation_time_budget"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings_from(tmp_path, text)


class TestGeometry:
    def test_crop_box_is_centred_with_the_target_aspect(self) -> None:
        assert plan((800, 600), Size(100, 100), ResizeMode.CROP, True).box == (100.0, 0.0, 700.0, 600.0)

    def test_fit_and_pad(self) -> None:
        fit = plan((800, 600), Size(100, 100), ResizeMode.FIT, True)
        assert (fit.size, fit.canvas) == ((100, 75), None)
        padded = plan((800, 600), Size(100, 100), ResizeMode.PAD, True)
        assert (padded.size, padded.output_size) == ((100, 75), (100, 100))

    @pytest.mark.parametrize(
        ("orientation", "expected"),
        [(1, (0, 0, 10, 20)), (3, (90, 30, 100, 50)), (6, (0, 40, 20, 50)), (8, (80, 0, 100, 10))],
    )
    def test_upright_box_in_stored_coordinates(self, orientation: int, expected: tuple[int, ...]) -> None:
        # Stored 100x50; the box is the upright top-left 10x20.
        assert stored_box((0, 0, 10, 20), (100, 50), orientation) == expected

    @pytest.mark.parametrize(
        ("reduction", "decoded"),
        [
            (100 / 3000, (500, 375)),  # 1/8 leaves 3.75 pixels per output pixel
            (1 / 8.1, (1000, 750)),  # 1/4 leaves 2.03
            (1 / 7.9, (2000, 1500)),  # 1/4 would leave 1.98, less than 2 at that scale: 1/2
            (1 / 3.6, (2000, 1500)),  # 1/2 leaves 1.8, enough at that scale (HALF_SCALE_GAP)
            (1 / 3.4, (4000, 3000)),  # 1/2 would leave 1.7: decoded whole
            (1.0, (4000, 3000)),  # never asks for more than there is
        ],
    )
    def test_draft_keeps_the_reducing_gap(self, reduction: float, decoded: tuple[int, int]) -> None:
        # As Pillow's JPEG decoder takes the request, for a real JPEG.
        image = Image.open(BytesIO(encode(Image.new("RGB", (4000, 3000)), "JPEG")))
        image.draft(None, draft_request(image.size, reduction))
        assert image.size == decoded

    def test_draft_request_never_rounds_up_past_a_scale(self) -> None:
        # Asking for 501 (rounded up), 1001 // 501 would be 1: Pillow would decode whole.
        assert draft_request((1001, 1001), 0.25) == (500, 500)

    def test_working_scale_is_set_by_the_most_demanding_size(self) -> None:
        assert working_scale((2400, 1800), [Size(150, 150), Size(400, 400)]) == pytest.approx(800 / 1800)
