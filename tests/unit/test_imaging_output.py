"""Resize modes, upscaling, transparency and the parameters of each output format."""

from __future__ import annotations

import errno
import os
from io import BytesIO

import pytest
from PIL import Image, JpegImagePlugin

from pymager_tx.core.model import ResizeMode
from pymager_tx.imaging.encoders import webp_is_lossless, written
from pymager_tx.imaging.formats import writable_extensions
from pymager_tx.imaging.render import EncodeOptions, render
from tests.images import (
    BLUE,
    GREEN,
    LIMITS,
    RED,
    close_to,
    derive,
    encode,
    halves,
    jpeg,
    mean_colour,
    spec,
    three_bands,
)

FIT, PAD = ResizeMode.FIT, ResizeMode.PAD


class TestModes:
    def test_fit_keeps_everything_inside(self) -> None:
        image = derive(encode(three_bands((300, 100)), "PNG"), 150, 150, "png", FIT)
        assert image.size == (150, 50)
        assert close_to(image.getpixel((5, 25)), RED)
        assert close_to(image.getpixel((145, 25)), BLUE)

    def test_fit_of_a_tall_picture(self) -> None:
        assert derive(encode(halves((100, 400)), "PNG"), 200, 200, "png", FIT).size == (50, 200)

    def test_pad_is_exactly_the_size_with_the_background_around(self) -> None:
        image = derive(encode(three_bands((300, 100)), "PNG"), 150, 150, "png", PAD, background=(0, 255, 0))
        assert image.size == (150, 150)
        assert image.mode == "RGB"
        assert close_to(mean_colour(image, (0, 0, 150, 45)), GREEN)  # the padding above
        assert close_to(image.getpixel((5, 75)), RED)
        assert close_to(image.getpixel((145, 75)), BLUE)

    @pytest.mark.parametrize("extension", ["png", "webp", "gif"])
    def test_pad_is_opaque_even_where_alpha_could_be(self, extension: str) -> None:
        source = Image.new("RGBA", (100, 50), (255, 0, 0, 0))
        image = derive(encode(source, "PNG"), 100, 100, extension, PAD).convert("RGBA")
        assert image.getpixel((50, 5)) == (255, 255, 255, 255)  # padding
        assert image.getpixel((50, 50))[3] == 0  # the picture's own transparency

    @pytest.mark.parametrize("mode", list(ResizeMode))
    def test_upscales_by_default(self, mode: ResizeMode) -> None:
        assert (
            derive(jpeg((40, 20)), 400, 400, "png", mode).size
            == {
                ResizeMode.CROP: (400, 400),
                ResizeMode.SMART: (400, 400),
                ResizeMode.FIT: (400, 200),
                ResizeMode.PAD: (400, 400),
            }[mode]
        )

    def test_without_upscale_a_crop_keeps_the_aspect_at_the_original_size(self) -> None:
        image = derive(encode(three_bands((120, 40)), "PNG"), 400, 400, "png", upscale=False)
        assert image.size == (40, 40)
        assert close_to(mean_colour(image), GREEN)

    def test_without_upscale_a_crop_still_reduces_what_is_larger(self) -> None:
        assert derive(jpeg((1000, 100)), 200, 50, "png", upscale=False).size == (200, 50)

    def test_without_upscale_fit_keeps_the_original_size(self) -> None:
        assert derive(jpeg((40, 20)), 400, 400, "png", FIT, upscale=False).size == (40, 20)

    def test_without_upscale_pad_centres_the_original(self) -> None:
        image = derive(jpeg((40, 20), RED), 100, 100, "png", PAD, upscale=False, background=(0, 0, 255))
        assert image.size == (100, 100)
        assert close_to(image.getpixel((50, 50)), RED)
        assert close_to(image.getpixel((25, 50)), BLUE)  # left of the 40 px wide original


class TestTransparency:
    def source(self) -> bytes:
        image = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
        image.paste((0, 0, 255, 255), (25, 25, 75, 75))
        return encode(image, "PNG")

    @pytest.mark.parametrize("extension", ["png", "webp", "gif", "avif", "tiff"])
    def test_kept_where_the_target_has_alpha(self, extension: str) -> None:
        image = derive(self.source(), 50, 50, extension).convert("RGBA")
        assert image.getpixel((2, 2))[3] == 0
        assert close_to(image.getpixel((25, 25)), (0, 0, 255, 255))

    @pytest.mark.parametrize("extension", ["jpg", "bmp"])
    def test_composited_on_the_background_where_it_has_none(self, extension: str) -> None:
        image = derive(self.source(), 50, 50, extension, background=(0, 255, 0))
        assert image.mode == "RGB"
        assert close_to(image.getpixel((2, 2)), GREEN)
        assert close_to(image.getpixel((25, 25)), BLUE)

    def test_gif_gets_a_transparent_palette_index(self) -> None:
        image = derive(self.source(), 50, 50, "gif")
        assert image.mode == "P"
        index = image.info["transparency"]
        assert image.getpixel((2, 2)) == index
        assert image.getpixel((25, 25)) != index


class TestFormats:
    def noisy(self) -> bytes:
        return encode(Image.effect_noise((200, 200), 50).convert("RGB"), "PNG")

    def test_jpeg_progressive_by_default_from_half_a_megapixel(self) -> None:
        source = jpeg((1200, 1200))
        assert derive(source, 500, 500).info.get("progressive") == 1
        assert "progressive" not in derive(source, 499, 500).info  # a thumbnail: baseline
        assert derive(source, 100, 100, jpeg_progressive_min_pixels=0).info.get("progressive") == 1
        assert "progressive" not in derive(source, 500, 500, jpeg_progressive=False).info

    @pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
    def test_jpeg_subsampling(self, subsampling: str) -> None:
        image = derive(jpeg((100, 100)), 50, 50, jpeg_subsampling=subsampling)
        assert isinstance(image, JpegImagePlugin.JpegImageFile)
        names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
        assert names[JpegImagePlugin.get_sampling(image)] == subsampling

    def test_jpeg_quality(self) -> None:
        assert _size(self.noisy(), jpeg_quality=30) < _size(self.noisy(), jpeg_quality=95) * 0.7

    def test_webp_quality(self) -> None:
        lossy = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG", quality=95)
        low, high = (_data(lossy, 100, 100, "webp", webp_quality=quality) for quality in (20, 95))
        assert not webp_is_lossless(low) and not webp_is_lossless(high)
        assert len(low) < len(high) * 0.7

    @pytest.mark.parametrize(("source_format", "lossless"), [("PNG", True), ("GIF", True), ("BMP", True),
                                                             ("TIFF", True), ("JPEG", False)])  # fmt: skip
    def test_webp_is_lossless_for_lossless_sources(self, source_format: str, lossless: bool) -> None:
        image = Image.effect_noise((64, 64), 40).convert("RGB")
        source = encode(image.convert("P") if source_format == "GIF" else image, source_format)
        assert webp_is_lossless(_data(source, 64, 64, "webp")) is lossless

    def test_webp_source_keeps_its_kind(self) -> None:
        noisy = Image.effect_noise((64, 64), 40).convert("RGB")
        lossless = encode(noisy, "WEBP", lossless=True)
        lossy = encode(noisy, "WEBP", quality=80)
        assert webp_is_lossless(lossless) and not webp_is_lossless(lossy)
        assert webp_is_lossless(_data(lossless, 32, 32, "webp"))
        assert not webp_is_lossless(_data(lossy, 32, 32, "webp"))

    def test_webp_lossless_detection_of_extended_files(self) -> None:
        alpha = Image.new("RGBA", (16, 16), (1, 2, 3, 100))
        assert webp_is_lossless(encode(alpha, "WEBP", lossless=True))
        assert not webp_is_lossless(encode(alpha, "WEBP", quality=50))
        assert not webp_is_lossless(b"RIFF\0\0\0\0WEBP")

    def test_png_is_not_optimized_but_compressed(self) -> None:
        # compress_level 6: a flat picture compresses to almost nothing.
        assert len(_data(jpeg((400, 400)), 400, 400, "png")) < 5000

    @pytest.mark.parametrize("extension", sorted(writable_extensions()))
    def test_no_metadata_in_any_format(self, extension: str) -> None:
        exif = Image.Exif()
        exif[0x010F] = "Camera maker"
        xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret</x:xmpmeta>'
        source = encode(Image.new("RGB", (40, 40), RED), "PNG", exif=exif.tobytes())
        data = _data(source, 20, 20, extension)
        assert b"Camera maker" not in data
        assert b"secret" not in data
        jpeg_with_xmp = encode(Image.new("RGB", (40, 40), RED), "JPEG", xmp=xmp, comment=b"secret")
        assert b"secret" not in _data(jpeg_with_xmp, 20, 20, extension)


def _data(source: bytes, width: int, height: int, extension: str, **options: object) -> bytes:
    return render(source, spec(width, height, extension), LIMITS, EncodeOptions(**options)).data  # type: ignore[arg-type]


def _size(source: bytes, **options: object) -> int:
    return len(_data(source, 200, 200, "jpg", **options))


class TestWritten:
    """Encoders write into an anonymous file (so that Pillow encodes without
    the GIL): the bytes are those a BytesIO gets, in every format."""

    @pytest.mark.parametrize("name", sorted({fmt.pillow_name for fmt in writable_extensions().values()}))
    def test_the_same_bytes_as_into_memory(self, name: str) -> None:
        picture = three_bands((120, 80)).convert("RGBA" if name in ("PNG", "WEBP", "AVIF") else "RGB")
        parameters: dict[str, object] = {"quality": 90} if name in ("JPEG", "WEBP") else {}
        expected = BytesIO()
        picture.save(expected, format=name, **parameters)
        assert written(picture, name, parameters) == expected.getvalue()

    def test_an_animation_too(self) -> None:
        frames = [three_bands((60, 40)), halves((60, 40))]
        parameters: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": [80, 120]}
        expected = BytesIO()
        frames[0].save(expected, format="GIF", **parameters)
        data = written(frames[0], "GIF", parameters)
        assert data == expected.getvalue()
        with Image.open(BytesIO(data)) as decoded:
            assert decoded.n_frames == 2

    def test_a_progressive_jpeg_written_whole(self) -> None:
        picture = three_bands((640, 480))
        data = written(picture, "JPEG", {"quality": 85, "progressive": True, "optimize": True})
        with Image.open(BytesIO(data)) as decoded:
            decoded.load()
            assert decoded.info.get("progressive") == 1
            assert decoded.size == (640, 480)

    def test_without_a_memory_file_the_same_bytes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refused(name: str, flags: int = 0) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        picture = three_bands((200, 150))
        parameters: dict[str, object] = {"quality": 85, "progressive": True, "optimize": True}
        through_memfd = written(picture, "JPEG", parameters)
        monkeypatch.setattr(os, "memfd_create", refused, raising=False)
        assert written(picture, "JPEG", parameters) == through_memfd
