from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image, ImageCms

from pymager_tx.core.errors import InvalidImage, TooManyPixels
from pymager_tx.imaging.formats import output_format_for, writable_extensions
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, probe, render
from tests.images import (
    BLUE,
    FIXTURES,
    GREEN,
    LIMITS,
    RED,
    close_to,
    derive,
    encode,
    halves,
    jpeg,
    opened,
    png,
    png_declaring,
    psnr,
    solid,
    spec,
    three_bands,
    with_orientation,
)

OPTIONS = EncodeOptions(jpeg_quality=85)


class TestProbe:
    @pytest.mark.parametrize(
        ("format", "name"),
        [
            ("JPEG", "jpeg"),
            ("PNG", "png"),
            ("GIF", "gif"),
            ("WEBP", "webp"),
            ("TIFF", "tiff"),
            ("BMP", "bmp"),
            ("AVIF", "avif"),
        ],
    )
    def test_describes_each_accepted_format(self, format: str, name: str) -> None:
        info = probe(encode(solid((40, 30)), format), LIMITS)
        assert (info.format.name, info.width, info.height) == (name, 40, 30)

    def test_reports_the_displayed_size_of_a_rotated_photo(self) -> None:
        info = probe(with_orientation(halves((200, 100)), 6), LIMITS)
        assert (info.width, info.height) == (100, 200)

    def test_the_original_fixture(self) -> None:
        info = probe((FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes(), LIMITS)
        assert (info.format.media_type, info.width, info.height) == ("image/jpeg", 800, 600)

    def test_refuses_text(self) -> None:
        with pytest.raises(InvalidImage, match="not an image in an accepted format"):
            probe((FIXTURES / "somethingthatisnotanimage.txt").read_bytes(), LIMITS)

    def test_refuses_empty_data(self) -> None:
        with pytest.raises(InvalidImage, match="empty"):
            probe(b"", LIMITS)

    @pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "WEBP"])
    def test_refuses_truncated_images(self, format: str) -> None:
        noisy = Image.effect_noise((256, 256), 64).convert("RGB")
        data = encode(noisy, format)
        with pytest.raises(InvalidImage):
            probe(data[: len(data) * 2 // 3], LIMITS)

    def test_refuses_formats_outside_the_allow_list(self) -> None:
        only_jpeg = DecodeLimits(max_pixels=LIMITS.max_pixels, decoders=("JPEG",))
        with pytest.raises(InvalidImage, match=r"accepted format \(JPEG\)"):
            probe(png(), only_jpeg)

    def test_refuses_formats_pillow_reads_but_we_do_not(self) -> None:
        with pytest.raises(InvalidImage):
            probe(encode(solid(), "TGA"), LIMITS)

    def test_refuses_too_many_pixels_before_decoding(self) -> None:
        small = DecodeLimits(max_pixels=999, decoders=LIMITS.decoders)
        with pytest.raises(TooManyPixels, match="40x25 = 1000 pixels; the limit is 999"):
            probe(png((40, 25)), small)

    def test_refuses_a_header_that_declares_a_huge_image(self) -> None:
        with pytest.raises(TooManyPixels):
            probe(png_declaring(30_000, 30_000), LIMITS)

    def test_refuses_a_bomb_beyond_pillows_own_limit(self) -> None:
        # Pillow raises DecompressionBombError itself past twice its limit.
        with pytest.raises(TooManyPixels):
            probe(png_declaring(100_000, 100_000), LIMITS)

    def test_refuses_a_jpeg_of_endless_progressive_scans(self) -> None:
        # The shape of a scan bomb: one small refinement scan repeated until
        # decoding costs minutes, in a file of a few hundred kilobytes.
        data = encode(solid((64, 64)), "JPEG", progressive=True)
        last_scan = data.rindex(b"\xff\xda")
        bomb = data[:last_scan] + data[last_scan:-2] * 120 + b"\xff\xd9"
        with pytest.raises(InvalidImage, match=r"has 1.. scans"):
            probe(bomb, LIMITS)
        with pytest.raises(InvalidImage, match="scans"):
            render(bomb, spec(10, 10), LIMITS, OPTIONS)

    def test_progressive_jpegs_from_real_encoders_pass(self) -> None:
        noisy = Image.effect_noise((300, 200), 40).convert("RGB")
        assert probe(encode(noisy, "JPEG", progressive=True, quality=95), LIMITS).width == 300

    def test_refuses_damaged_headers(self) -> None:
        data = bytearray(png())
        data[16:24] = b"\xff" * 8  # width and height fields of IHDR, CRC now wrong
        with pytest.raises(InvalidImage):
            probe(bytes(data), LIMITS)


class TestRender:
    @pytest.mark.parametrize("extension", sorted(writable_extensions()))
    def test_every_writable_format_gives_exactly_the_size_asked(self, extension: str) -> None:
        image = derive(jpeg((300, 200)), 120, 90, extension)
        expected = output_format_for(extension)
        assert expected is not None
        assert image.format == expected.pillow_name
        assert image.size == (120, 90)

    @pytest.mark.parametrize(("width", "height"), [(100, 100), (30, 100), (100, 10), (1, 1), (900, 300)])
    def test_output_is_exactly_w_by_h_for_any_aspect(self, width: int, height: int) -> None:
        assert derive(encode(three_bands(), "PNG"), width, height, "png").size == (width, height)

    def test_crops_around_the_centre(self) -> None:
        image = derive(encode(three_bands((300, 100)), "PNG"), 50, 50, "png")
        # A square from the centre of three equal bands is all green.
        for x in (0, 25, 49):
            assert close_to(image.getpixel((x, 25)), GREEN), x

    def test_wide_target_keeps_the_whole_width(self) -> None:
        image = derive(encode(three_bands((300, 100)), "PNG"), 90, 10, "png")
        assert close_to(image.getpixel((2, 5)), RED)
        assert close_to(image.getpixel((45, 5)), GREEN)
        assert close_to(image.getpixel((87, 5)), BLUE)

    def test_upscales_small_originals_as_the_original_service_did(self) -> None:
        assert derive(jpeg((20, 10)), 800, 600).size == (800, 600)

    @pytest.mark.parametrize("format", ["JPEG", "WEBP", "PNG", "TIFF"])
    def test_applies_exif_orientation_before_cropping(self, format: str) -> None:
        # Orientation 6: stored landscape, displayed rotated 90 degrees
        # clockwise, so the stored left (red) half is displayed on top.
        image = derive(with_orientation(halves((200, 100)), 6, format), 50, 100, "png")
        assert close_to(image.getpixel((25, 10)), RED)
        assert close_to(image.getpixel((25, 90)), BLUE)

    def test_transparency_becomes_white_without_alpha(self) -> None:
        source = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
        source.paste((0, 0, 255, 255), (25, 25, 75, 75))
        image = derive(encode(source, "PNG"), 100, 100, "jpg")
        assert image.mode == "RGB"
        assert close_to(image.getpixel((3, 3)), (255, 255, 255))
        assert close_to(image.getpixel((50, 50)), BLUE)

    def test_background_colour_is_an_option(self) -> None:
        source = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
        image = derive(encode(source, "PNG"), 20, 20, "jpg", background=(0, 128, 0))
        assert close_to(image.getpixel((10, 10)), (0, 128, 0))

    @pytest.mark.parametrize("extension", ["png", "webp", "gif", "avif"])
    def test_transparency_is_kept_where_the_target_has_alpha(self, extension: str) -> None:
        source = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
        source.paste((0, 0, 255, 255), (25, 25, 75, 75))
        image = derive(encode(source, "PNG"), 100, 100, extension).convert("RGBA")
        assert image.getpixel((3, 3))[3] == 0
        assert image.getpixel((50, 50))[3] == 255

    def test_palette_transparency_is_kept(self) -> None:
        source = Image.new("P", (40, 40), 0)
        source.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        source.paste(1, (10, 10, 30, 30))
        image = derive(encode(source, "PNG", transparency=0), 40, 40, "png").convert("RGBA")
        assert image.getpixel((2, 2))[3] == 0
        assert close_to(image.getpixel((20, 20)), (0, 0, 255, 255))

    def test_strips_metadata_and_the_colour_profile(self) -> None:
        # Pixels come out in sRGB, which every viewer assumes: no profile.
        exif = Image.Exif()
        exif[0x010F] = "Camera maker"
        exif[0x0112] = 1
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        source = encode(solid((80, 60)), "JPEG", exif=exif.tobytes(), icc_profile=profile, comment=b"secret")
        for extension in sorted(writable_extensions()):
            image = derive(source, 40, 30, extension)
            assert 0x010F not in image.getexif(), extension  # the camera maker
            assert "comment" not in image.info, extension
            assert "icc_profile" not in image.info, extension
            assert close_to(image.convert("RGB").getpixel((20, 15)), RED), extension

    def test_a_cmyk_profile_that_cannot_be_parsed_counts_as_none(self) -> None:
        profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        profile[16:20] = b"CMYK"
        profile[128:] = b"\xff" * (len(profile) - 128)  # the tag table, garbled
        source = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", icc_profile=bytes(profile))
        image = derive(source, 20, 20, "jpg")
        assert "icc_profile" not in image.info
        assert close_to(image.getpixel((10, 10)), RED)

    def test_jpeg_quality_is_applied(self) -> None:
        noisy = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "PNG")
        low = render(noisy, spec(200, 200), LIMITS, EncodeOptions(jpeg_quality=30))
        high = render(noisy, spec(200, 200), LIMITS, EncodeOptions(jpeg_quality=95))
        assert len(low.data) < len(high.data) * 0.7

    def test_sixteen_bit_greyscale_is_scaled_not_clipped(self) -> None:
        source = Image.new("I;16", (20, 20), 32768)
        image = derive(encode(source, "PNG"), 10, 10, "png")
        assert image.mode == "L"
        assert abs(image.getpixel((5, 5)) - 128) <= 1

    def test_cmyk_jpeg_comes_out_rgb(self) -> None:
        image = derive(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), 20, 20)
        assert image.mode == "RGB"
        assert close_to(image.getpixel((10, 10)), RED)

    def test_animated_gif_gives_its_first_frame(self) -> None:
        frames = [solid((30, 30), RED), solid((30, 30), BLUE)]
        buffer = BytesIO()
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
        image = derive(buffer.getvalue(), 10, 10, "png")
        assert close_to(image.getpixel((5, 5)), RED)

    def test_refuses_truncated_data(self) -> None:
        data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
        with pytest.raises(InvalidImage):
            render(data[:2000], spec(10, 10), LIMITS, OPTIONS)

    def test_refuses_too_many_pixels(self) -> None:
        with pytest.raises(TooManyPixels):
            render(png_declaring(30_000, 30_000), spec(10, 10), LIMITS, OPTIONS)

    def test_matches_the_original_services_thumbnail(self) -> None:
        # The original pymager's 100x100 answer for this photo: same framing
        # (centre crop to 1:1, then resize), measured by PSNR.
        source = (FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes()
        reference = opened((FIXTURES / "yemmaGouraya-100x100.jpg").read_bytes())
        image = derive(source, 100, 100)
        assert image.size == reference.size == (100, 100)
        assert psnr(image, reference) >= 28

    def test_framing_differs_measurably_from_a_wrong_crop(self) -> None:
        # Guards the PSNR check above: a plain squash of the whole photo (no
        # crop) must score clearly worse against the reference.
        source = opened((FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes())
        reference = opened((FIXTURES / "yemmaGouraya-100x100.jpg").read_bytes())
        squashed = source.resize((100, 100), Image.Resampling.LANCZOS)
        assert psnr(squashed, reference) < 25
