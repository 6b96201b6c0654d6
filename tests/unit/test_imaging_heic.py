"""HEIC/HEIF originals (iPhone photos), read through pillow-heif: made here
with its encoder, derived in the usual output formats."""

from __future__ import annotations

import pillow_heif
import pytest
from PIL import Image

from pymager_tx.core.errors import InvalidImage, TooManyPixels
from pymager_tx.core.formats import format_for_pillow
from pymager_tx.imaging.formats import default_decoders, output_format_for, writable_extensions
from pymager_tx.imaging.render import EncodeOptions, probe, render
from tests.images import (
    BLUE,
    LIMITS,
    RED,
    close_to,
    corner,
    derive,
    heic,
    heic_declaring,
    limits,
    marked,
    mean_colour,
    rgb_profile,
    spec,
)
from tests.unit.test_imaging_modes import ORANGE, ORANGE_P3_IN_SRGB
from tests.unit.test_imaging_orientation import DISPLAYED


def test_heif_is_a_default_decoder_and_no_output_format() -> None:
    assert "HEIF" in default_decoders()
    assert "HEIF" not in Image.SAVE  # registered for decoding only
    assert not {"heic", "heif", "hif"} & set(writable_extensions())
    assert output_format_for("heic") is None
    # One decoding thread: the image threads are the service's parallelism.
    assert pillow_heif.options.DECODE_THREADS == 1
    assert not pillow_heif.options.THUMBNAILS


def test_probe_describes_a_heic() -> None:
    info = probe(heic(marked((120, 80))), LIMITS)
    assert (info.format.name, info.format.media_type, info.width, info.height) == (
        "heic",
        "image/heic",
        120,
        80,
    )


def test_heif_files_of_other_brands_are_heif() -> None:
    assert format_for_pillow("HEIF", "image/heif").name == "heif"
    assert format_for_pillow("HEIF", "image/heic").name == "heic"
    assert format_for_pillow("HEIF").name == "heic"


@pytest.mark.parametrize("extension", ["jpg", "png", "webp"])
def test_derived_in_the_output_formats(extension: str) -> None:
    image = derive(heic(Image.new("RGB", (96, 64), RED)), 48, 32, extension)
    assert image.size == (48, 32)
    assert close_to(mean_colour(image.convert("RGB")), RED, 12)


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_each_orientation_is_applied_once(orientation: int) -> None:
    # The container's irot/imir turn the picture; the EXIF tag that repeats
    # the turn must not turn it again.
    data = heic(marked((120, 80)), orientation)
    rotated = orientation >= 5
    info = probe(data, LIMITS)
    assert (info.width, info.height) == ((80, 120) if rotated else (120, 80))
    width, height = (40, 60) if rotated else (60, 40)
    image = derive(data, width, height, "png")
    assert image.size == (width, height)
    red_corner, blue_corner = DISPLAYED[orientation]
    assert close_to(corner(image, red_corner), RED), (red_corner, corner(image, red_corner))
    assert close_to(corner(image, blue_corner), BLUE), (blue_corner, corner(image, blue_corner))


def test_the_colour_profile_is_converted_to_srgb() -> None:
    source = Image.new("RGB", (64, 64), ORANGE)
    tagged = derive(heic(source, icc_profile=rgb_profile(), quality=-1), 32, 32, "png")
    untagged = derive(heic(source, quality=-1), 32, 32, "png")
    assert "icc_profile" not in tagged.info
    assert close_to(mean_colour(untagged), ORANGE, 6), mean_colour(untagged)
    assert close_to(mean_colour(tagged), ORANGE_P3_IN_SRGB, 8), mean_colour(tagged)


def test_the_pixel_count_is_checked_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # The header says 3000x3000; the HEVC data is 64x64 and is never decoded.
    data = heic_declaring(3000, 3000)

    def decoded(image: object) -> bytes:
        raise AssertionError("decoded")

    monkeypatch.setattr(pillow_heif.HeifImage, "data", property(decoded))
    with pytest.raises(TooManyPixels, match="3000x3000"):
        probe(data, limits(max_pixels=4_000_000))
    with pytest.raises(TooManyPixels):
        render(data, spec(100, 100), limits(max_pixels=4_000_000), EncodeOptions())


def test_max_pixels_below_a_real_heic() -> None:
    with pytest.raises(TooManyPixels, match="120x80"):
        probe(heic(marked((120, 80))), limits(max_pixels=120 * 80 - 1))


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95])
def test_a_truncated_heic_is_refused(cut: int) -> None:
    data = heic(marked((120, 80)))
    with pytest.raises(InvalidImage):
        probe(data[: int(len(data) * cut)], LIMITS)


def test_garbled_hevc_data_is_refused() -> None:
    data = bytearray(heic(marked((120, 80))))
    start = data.index(b"mdat") + 4
    data[start + 8 :] = b"\xff" * (len(data) - start - 8)
    with pytest.raises(InvalidImage):
        probe(bytes(data), LIMITS)


def test_refused_when_heif_is_not_an_allowed_decoder() -> None:
    others = tuple(name for name in default_decoders() if name != "HEIF")
    with pytest.raises(InvalidImage, match="not an image in an accepted format"):
        probe(heic(marked()), limits(decoders=others))
