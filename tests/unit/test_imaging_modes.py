"""Pixel modes phones, cameras and design tools write, and colour profiles:
everything comes out 8-bit sRGB, measured by colour."""

from __future__ import annotations

import struct

import pytest
from PIL import Image, ImageCms

from pymager_tx.imaging.pixels import to_srgb
from tests.images import (
    BLUE,
    RED,
    close_to,
    derive,
    encode,
    mean_colour,
    png_sixteen_bit,
    rgb_profile,
)

ORANGE = (200, 60, 40)
# ORANGE in Display P3 (gamma 2.2), in sRGB: worked out by hand from the
# primaries (P3 -> XYZ D50 -> sRGB, sRGB curve), independently of littlecms.
ORANGE_P3_IN_SRGB = (219, 37, 13)


class TestModes:
    def test_cmyk_jpeg(self) -> None:
        image = derive(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), 20, 20)
        assert image.mode == "RGB"
        assert close_to(mean_colour(image), RED)

    def test_ycck_jpeg(self) -> None:
        # Adobe YCCK: C, M, Y inverted, taken as RGB and stored as YCbCr; K
        # as is; APP14 transform 2.  Pillow writes CMYK with transform 0, so
        # store the YCCK samples as if CMYK and patch the transform byte.
        cmyk = (0, 255, 255, 0)  # red
        red, green, blue = (255 - value for value in cmyk[:3])
        y = 0.299 * red + 0.587 * green + 0.114 * blue
        cb = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
        cr = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
        # Adobe CMYK JPEGs store inverted samples; Pillow inverts on write too.
        samples = (round(y), round(cb), round(cr), cmyk[3])
        data = bytearray(encode(Image.new("CMYK", (32, 32), samples), "JPEG", quality=100))
        app14 = data.index(b"Adobe")
        assert data[app14 + 11] == 0  # the transform flag
        data[app14 + 11] = 2
        image = derive(bytes(data), 16, 16)
        assert image.mode == "RGB"
        assert close_to(mean_colour(image), RED), mean_colour(image)

    @pytest.mark.parametrize("format", ["PNG", "TIFF"])
    def test_sixteen_bit_grey_is_scaled_not_clipped(self, format: str) -> None:
        source = Image.new("I;16", (40, 40), 0)
        source.paste(Image.new("I;16", (20, 40), 49152), (0, 0))  # three quarters of full scale
        image = derive(encode(source, format), 20, 10, "png")
        assert image.mode == "L"
        assert abs(mean_colour(image, (0, 0, 8, 10))[0] - 192) <= 2
        assert mean_colour(image, (12, 0, 20, 10))[0] <= 2

    def test_sixteen_bit_rgb_tiff(self) -> None:
        # Pillow reads 16-bit RGB TIFF as 8-bit RGB (high bytes); build one by hand.
        width, height = 8, 8
        pixels = struct.pack("<HHH", 65535, 32768, 0) * (width * height)
        entries = [
            (256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, height), (279, 4, 1, len(pixels)),
        ]  # fmt: skip
        ifd_offset = 8
        bits_offset = ifd_offset + 2 + 12 * len(entries) + 4
        data_offset = bits_offset + 6
        ifd = struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            value = {258: bits_offset, 273: data_offset}.get(tag, value)
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            ifd += struct.pack("<HHI", tag, kind, count) + packed
        data = b"II*\0" + struct.pack("<I", ifd_offset) + ifd + b"\0\0\0\0"
        data += struct.pack("<HHH", 16, 16, 16) + pixels
        image = derive(data, 4, 4, "png")
        assert image.mode == "RGB"
        assert close_to(mean_colour(image), (255, 128, 0), 2)

    def test_eight_bit_rgba_tiff(self) -> None:
        source = Image.new("RGBA", (20, 20), (0, 0, 255, 255))
        source.paste((0, 0, 0, 0), (0, 0, 10, 20))
        image = derive(encode(source, "TIFF"), 20, 20, "png")
        assert image.getpixel((2, 10))[3] == 0
        assert image.getpixel((17, 10)) == (0, 0, 255, 255)

    def test_sixteen_bit_rgba_png(self) -> None:
        # Pillow reads 16-bit RGBA as 8-bit (high bytes); alpha must survive.
        row = [(0, 0, 0, 0)] * 10 + [(0, 32768, 65535, 65535)] * 10
        image = derive(png_sixteen_bit([row] * 20, colour_type=6), 20, 20, "png")
        assert image.getpixel((2, 10))[3] == 0
        assert close_to(image.getpixel((17, 10)), (0, 128, 255, 255), 1)

    def test_sixteen_bit_grey_with_alpha_png(self) -> None:
        row = [(49152, 0)] * 10 + [(16384, 65535)] * 10
        image = derive(png_sixteen_bit([row] * 20, colour_type=4), 20, 20, "png")
        assert image.mode in ("LA", "RGBA")  # Pillow reads 16-bit grey and alpha as RGBA
        assert image.getpixel((2, 10))[-1] == 0
        assert close_to(image.convert("LA").getpixel((17, 10)), (64, 255), 1)

    def test_sixteen_bit_grey_with_a_transparent_value(self) -> None:
        # tRNS marks one 16-bit value transparent; a value one step above it stays opaque.
        row = [(1000,)] * 10 + [(1001,)] * 5 + [(49152,)] * 5
        data = png_sixteen_bit([row] * 20, colour_type=0, transparency=(1000,))
        image = derive(data, 20, 20, "png")
        assert image.mode == "LA"
        assert image.getpixel((2, 10))[1] == 0
        assert close_to(image.getpixel((12, 10)), (4, 255), 1)  # 1001 / 257, opaque
        assert close_to(image.getpixel((18, 10)), (191, 255), 1)
        flat = derive(data, 20, 20, "jpg", background=(0, 0, 255))
        assert close_to(flat.getpixel((2, 10)), BLUE, 4)

    def test_sixteen_bit_rgb_with_a_transparent_colour(self) -> None:
        # Pillow keeps only the high byte of each sample: (1000, 2000, 3000)
        # reads as (3, 7, 11), which must not match a tRNS key of (3, 7, 11).
        row = [(1000, 2000, 3000)] * 10 + [(3, 7, 11)] * 5 + [(0, 0, 65535)] * 5
        data = png_sixteen_bit([row] * 20, colour_type=2, transparency=(1000, 2000, 3000))
        image = derive(data, 20, 20, "png")
        assert image.mode == "RGBA"
        assert image.getpixel((2, 10))[3] == 0
        assert image.getpixel((12, 10)) == (0, 0, 0, 255)
        assert image.getpixel((18, 10)) == (0, 0, 255, 255)
        flat = derive(data, 20, 20, "jpg", background=(0, 255, 0))
        assert close_to(flat.getpixel((2, 10)), (0, 255, 0), 4)

    def test_grey(self) -> None:
        image = derive(encode(Image.new("L", (40, 40), 100), "PNG"), 20, 20, "png")
        assert image.mode == "L"
        assert abs(mean_colour(image)[0] - 100) <= 1

    def test_grey_with_alpha(self) -> None:
        source = Image.new("LA", (40, 40), (100, 255))
        source.paste((0, 0), (0, 0, 20, 40))
        image = derive(encode(source, "PNG"), 40, 40, "png")
        assert image.mode == "LA"
        assert image.getpixel((5, 20))[1] == 0
        assert image.getpixel((35, 20)) == (100, 255)
        flat = derive(encode(source, "PNG"), 40, 40, "jpg", background=(0, 0, 255))
        assert close_to(flat.getpixel((5, 20)), BLUE)
        assert close_to(flat.getpixel((35, 20)), (100, 100, 100))

    def test_palette_without_transparency_is_resampled_not_nearest(self) -> None:
        # A palette picture of fine stripes: a real filter averages them.
        source = Image.new("P", (100, 100), 0)
        source.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        for x in range(0, 100, 2):
            source.paste(1, (x, 0, x + 1, 100))
        image = derive(encode(source, "PNG"), 10, 10, "png")
        assert image.mode == "RGB"
        assert all(abs(value - 128) <= 16 for value in mean_colour(image, (2, 2, 8, 8)))

    def test_palette_with_trns(self) -> None:
        source = Image.new("P", (40, 40), 0)
        source.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        source.paste(1, (10, 10, 30, 30))
        image = derive(encode(source, "PNG", transparency=0), 40, 40, "png")
        assert image.mode == "RGBA"
        assert image.getpixel((2, 2))[3] == 0
        assert close_to(image.getpixel((20, 20)), (0, 0, 255, 255))

    def test_rgb_with_trns(self) -> None:
        source = Image.new("RGB", (40, 40), (0, 255, 0))
        source.paste(BLUE, (20, 0, 40, 40))
        image = derive(encode(source, "PNG", transparency=(0, 255, 0)), 40, 40, "png")
        assert image.getpixel((5, 20))[3] == 0
        assert image.getpixel((35, 20)) == (0, 0, 255, 255)

    def test_one_bit(self) -> None:
        source = Image.new("1", (80, 80), 0)
        source.paste(1, (0, 0, 40, 80))
        image = derive(encode(source, "PNG"), 40, 40, "png")
        assert image.mode == "L"
        assert mean_colour(image, (0, 0, 15, 40))[0] >= 250
        assert mean_colour(image, (25, 0, 40, 40))[0] <= 5

    @pytest.mark.parametrize("format", ["PNG", "WEBP", "TIFF"])
    def test_rgba(self, format: str) -> None:
        source = Image.new("RGBA", (40, 40), (255, 0, 0, 128))
        image = derive(
            encode(source, format, **({"lossless": True} if format == "WEBP" else {})), 20, 20, "png"
        )
        assert image.mode == "RGBA"
        assert close_to(image.getpixel((10, 10)), (255, 0, 0, 128), 2)


class TestColour:
    def test_wide_gamut_is_converted_to_srgb(self) -> None:
        profile = rgb_profile()
        tagged = derive(encode(Image.new("RGB", (40, 40), ORANGE), "PNG", icc_profile=profile), 20, 20, "png")
        untagged = derive(encode(Image.new("RGB", (40, 40), ORANGE), "PNG"), 20, 20, "png")
        assert "icc_profile" not in tagged.info
        assert close_to(mean_colour(untagged), ORANGE, 1)
        assert close_to(mean_colour(tagged), ORANGE_P3_IN_SRGB, 3), mean_colour(tagged)
        assert max(abs(a - b) for a, b in zip(mean_colour(tagged), ORANGE, strict=True)) >= 15

    @pytest.mark.parametrize(("format", "extension"), [("JPEG", "jpg"), ("WEBP", "webp"), ("TIFF", "gif")])
    def test_every_carrier_of_profiles(self, format: str, extension: str) -> None:
        params: dict[str, object] = {"icc_profile": rgb_profile()}
        if format != "TIFF":
            params["quality"] = 100
        data = encode(Image.new("RGB", (40, 40), ORANGE), format, **params)
        image = derive(data, 20, 20, extension)
        assert close_to(mean_colour(image.convert("RGB")), ORANGE_P3_IN_SRGB, 8), mean_colour(image)

    def test_alpha_survives_the_conversion(self) -> None:
        source = Image.new("RGBA", (20, 20), (*ORANGE, 255))
        source.paste((0, 0, 0, 0), (0, 0, 10, 20))
        image = derive(encode(source, "PNG", icc_profile=rgb_profile()), 20, 20, "png")
        assert image.getpixel((3, 10))[3] == 0
        assert close_to(image.getpixel((16, 10)), (*ORANGE_P3_IN_SRGB, 255), 3)

    def test_srgb_profile_changes_nothing(self) -> None:
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        image = derive(encode(Image.new("RGB", (20, 20), ORANGE), "PNG", icc_profile=srgb), 10, 10, "png")
        assert close_to(mean_colour(image), ORANGE, 1)

    @pytest.mark.parametrize(
        "profile",
        [b"garbage", b"\0" * 200, rgb_profile()[:140], rgb_profile()[:16] + b"GRAY" + rgb_profile()[20:]],
    )
    def test_a_profile_littlecms_cannot_use_counts_as_none(self, profile: bytes) -> None:
        image = to_srgb(Image.new("RGB", (4, 4), ORANGE), profile)
        assert image.getpixel((0, 0)) == ORANGE

    def test_a_profile_of_another_colour_space_counts_as_none(self) -> None:
        # An RGB profile on a CMYK picture: Pillow's plain conversion.
        image = to_srgb(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), rgb_profile())
        assert close_to(image.getpixel((0, 0)), RED)
