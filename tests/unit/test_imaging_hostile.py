"""Hostile files: lying headers, bombs, endless animations, damaged bytes and
slow derivations end in a domain error (a 4xx), never anything else."""

from __future__ import annotations

import random
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image, PngImagePlugin

from pymager_tx.core.errors import DerivationTooCostly, InvalidImage, PymagerError, TooManyPixels
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.imaging.render import EncodeOptions, probe, render
from tests.images import LIMITS, animation, encode, jpeg, limits, opened, png, spec, with_orientation

OPTIONS = EncodeOptions()


def png_with_chunk(kind: bytes, body: bytes) -> bytes:
    """A small valid PNG with one more chunk inserted before its pixels."""
    data = png((16, 16))
    idat = data.index(b"IDAT") - 4
    chunk = (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )
    return data[:idat] + chunk + data[idat:]


def gif_of_tiny_frames(count: int) -> bytes:
    """count frames of 1x1, about 23 bytes each: cheap to send, many to count."""
    header = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = (
        b"!\xf9\x04\x00\x0a\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00" + b"\x02\x02\x44\x01\x00"
    )
    return header + loop + frame * count + b";"


class TestLyingHeaders:
    def test_jpeg_declaring_a_huge_size(self) -> None:
        data = bytearray(jpeg((16, 16)))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
        with pytest.raises(TooManyPixels):
            probe(bytes(data), LIMITS)
        with pytest.raises(TooManyPixels):
            render(bytes(data), spec(10, 10), LIMITS, OPTIONS)

    def test_gif_screen_declaring_a_huge_size(self) -> None:
        data = bytearray(encode(Image.new("P", (16, 16)), "GIF"))
        data[6:10] = struct.pack("<HH", 65535, 65535)
        with pytest.raises(TooManyPixels):
            probe(bytes(data), LIMITS)

    def test_gif_frame_reaching_far_past_the_canvas(self) -> None:
        # The second frame's descriptor claims 60000x60000; Pillow would grow
        # the canvas to it when seeking: the first frame only, undecoded past it.
        data = animation("GIF", [(255, 0, 0), (0, 0, 255)], (16, 16))
        descriptor = b",\x00\x00\x00\x00" + struct.pack("<HH", 16, 16)
        assert data.count(descriptor) == 2
        second = data.index(descriptor, data.index(descriptor) + 1)
        hostile = data[: second + 5] + struct.pack("<HH", 60000, 60000) + data[second + 9 :]
        assert probe(hostile, LIMITS).width == 16  # the first frame is fine
        image = opened(render(hostile, spec(10, 10, "gif"), LIMITS, OPTIONS).data)
        assert (image.size, getattr(image, "n_frames", 1)) == ((10, 10), 1)

    @pytest.mark.parametrize("format", ["WEBP", "TIFF", "BMP"])
    def test_other_formats_declaring_a_huge_size(self, format: str) -> None:
        small = limits(max_pixels=100)
        with pytest.raises(TooManyPixels):
            probe(encode(Image.new("RGB", (20, 20)), format), small)

    @pytest.mark.parametrize("filter", ["error", "default", "ignore"])
    def test_pillows_own_limit_holds_whatever_the_warnings_filter(
        self, filter: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Between Pillow's limit and twice it Pillow only warns; imaging must
        # refuse by itself, whatever a thread's warnings filter says.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
        with warnings.catch_warnings():
            warnings.simplefilter(filter)
            with pytest.raises(TooManyPixels):
                probe(png((20, 20)), limits(max_pixels=10_000))
            with pytest.raises(TooManyPixels):
                render(png((20, 20)), spec(5, 5), limits(max_pixels=10_000), OPTIONS)


class TestBombs:
    def test_gif_of_a_hundred_thousand_frames(self) -> None:
        data = gif_of_tiny_frames(100_000)
        assert probe(data, LIMITS).width == 1
        image = opened(render(data, spec(10, 10, "gif"), LIMITS, OPTIONS).data)
        assert getattr(image, "n_frames", 1) == 1  # past max_frames: the first frame only

    @pytest.mark.parametrize("kind", [b"iCCP", b"zTXt"])
    def test_png_with_a_huge_compressed_chunk(self, kind: bytes) -> None:
        # 64 MB of zeros in 64 kB: Pillow caps what it inflates per chunk.
        name = b"icc" if kind == b"iCCP" else b"comment"
        body = name + b"\0\0" + zlib.compress(b"\0" * 64_000_000, 9)
        data = png_with_chunk(kind, body)
        try:
            probe(data, LIMITS)
        except InvalidImage:
            return  # refused at upload: a 400
        rendered = render(data, spec(8, 8, "png"), LIMITS, OPTIONS)
        assert opened(rendered.data).size == (8, 8)

    def test_gif_whose_lzw_data_outgrows_its_frame(self) -> None:
        # A 4x4 frame followed by LZW data for 16 million pixels: the decoder
        # stops at the frame's size.
        header = b"GIF89a" + struct.pack("<HH", 4, 4) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
        code_stream = bytearray()
        # Clear code (4) then literal 0 repeated, 3-bit codes packed as bytes:
        # not a minimal encoder, just a long valid-looking stream.
        code_stream += bytes([0x04, 0x00] * 200_000)
        blocks = b"".join(
            bytes([len(code_stream[i : i + 255])]) + bytes(code_stream[i : i + 255])
            for i in range(0, len(code_stream), 255)
        )
        data = header + b",\x00\x00\x00\x00\x04\x00\x04\x00\x00\x02" + blocks + b"\x00;"
        try:
            probe(data, LIMITS)
        except InvalidImage:
            return
        assert opened(render(data, spec(2, 2, "png"), LIMITS, OPTIONS).data).size == (2, 2)


class TestTimeBudget:
    def test_a_deadline_already_past_stops_a_still(self) -> None:
        with pytest.raises(DerivationTooCostly, match="time budget"):
            render(jpeg((100, 100)), spec(10, 10), LIMITS, OPTIONS, deadline=time.monotonic() - 1)

    def test_a_deadline_already_past_stops_an_animation(self) -> None:
        data = animation("GIF", [(255, 0, 0), (0, 0, 255)], (16, 16))
        with pytest.raises(DerivationTooCostly):
            render(data, spec(10, 10, "gif"), LIMITS, OPTIONS, deadline=time.monotonic() - 1)

    def test_a_deadline_ahead_changes_nothing(self) -> None:
        rendered = render(jpeg((100, 100)), spec(10, 10), LIMITS, OPTIONS, deadline=time.monotonic() + 60)
        assert (rendered.width, rendered.height) == (10, 10)

    def test_it_is_a_client_error_of_its_own(self) -> None:
        from pymager_tx.core.problems import problem_for

        problem = problem_for(DerivationTooCostly("slow"))
        assert (problem.status, problem.slug) == (422, "derivation-too-costly")


def _valid_sources() -> dict[str, bytes]:
    noisy = Image.effect_noise((48, 32), 40).convert("RGB")
    return {
        "JPEG": encode(noisy, "JPEG", quality=80),
        # A palette and text around few pixels: mutations reach more than zlib data.
        "PNG": _palette_png(),
        "GIF": animation("GIF", [(255, 0, 0), (0, 255, 0)], (24, 16)),
        "WEBP": encode(noisy, "WEBP", quality=70),
        "TIFF": with_orientation(noisy, 6, "TIFF"),
        "BMP": encode(noisy, "BMP"),
        "APNG": animation("PNG", [(255, 0, 0), (0, 0, 255)], (24, 16)),
        **({"AVIF": encode(noisy, "AVIF", quality=60)} if "AVIF" in default_decoders() else {}),
    }


def _palette_png() -> bytes:
    image = Image.new("P", (16, 12))
    image.putpalette(bytes(range(256)) * 3)
    image.paste(7, (0, 0, 8, 12))
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "x" * 300)
    return encode(image, "PNG", transparency=3, pnginfo=text)


def _mutations(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        position = rng.randrange(len(mutated))
        if choice < 0.6:
            mutated[position] = rng.randrange(256)
        elif choice < 0.8:
            del mutated[position : position + rng.randint(1, 16)]
        else:
            mutated[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(mutated)


def _with_png_checksums(data: bytes) -> bytes:
    """Recompute the CRC of every chunk that still parses, so that mutations
    reach the decoder instead of stopping at the checksum."""
    out, offset = bytearray(data[:8]), 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        end = offset + 8 + length
        if end + 4 > len(data):
            break
        body = data[offset + 4 : end]
        out += data[offset:end] + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        offset = end + 4
    return bytes(out + data[offset:])


# Pillow warns of the damage it finds in mutated TIFFs; the test is whether it raises.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
@pytest.mark.parametrize("format", sorted(_valid_sources()))
def test_fuzzed_bytes_give_only_domain_errors(format: str) -> None:
    rng = random.Random(f"pymager-{format}")  # deterministic: a failure reproduces
    source = _valid_sources()[format]
    outcomes = {"refused": 0, "derived": 0}
    for case in range(100):
        data = _mutations(source, rng)
        if format == "PNG":
            data = _with_png_checksums(data)
        try:
            probe(data, LIMITS)
        except InvalidImage:
            outcomes["refused"] += 1
            continue
        for target in ("png", "gif", "jpg", "webp"):
            try:
                render(data, spec(12, 9, target), LIMITS, OPTIONS)
            except PymagerError:
                pass
            except Exception as error:  # pragma: no cover - the failure message
                raise AssertionError(f"case {case}: {target}: {error!r}") from error
        outcomes["derived"] += 1
    # Both paths were exercised, so the test means something.
    assert outcomes["refused"] > 0 and outcomes["derived"] > 0, outcomes


def test_fuzzing_sources_are_themselves_valid() -> None:
    for data in _valid_sources().values():
        probe(data, LIMITS)
        render(data, spec(12, 9, "png"), LIMITS, OPTIONS)
