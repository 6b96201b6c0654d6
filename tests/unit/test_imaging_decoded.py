"""Pictures decoded lately: kept within their bounds, decoded once however
many threads ask at once, and renditions the same whether kept or not; an
upload's probe keeps its decode for the first rendition, which then needs
neither the upload's bytes nor their header."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import replace

import pytest
from PIL import Image

from pymager_tx.core.model import DerivedSpec, FocalPoint, ResizeMode, Size
from pymager_tx.imaging.decoded import DecodedPictures, KeptSource, Reuse, picture_bytes
from pymager_tx.imaging.render import EncodeOptions, KeptUpload, kept_scale, probe, render, render_kept
from tests.images import LIMITS, encode, rgb_profile, spec

MEGABYTE = 1024 * 1024


def picture(width: int, height: int = 100) -> Image.Image:
    return Image.new("RGB", (width, height), (10, 20, 30))


def counting(make: Callable[[], Image.Image]) -> tuple[Callable[[], Image.Image], list[int]]:
    calls: list[int] = []

    def decode() -> Image.Image:
        calls.append(1)
        return make()

    return decode, calls


def test_a_picture_is_decoded_once_and_kept() -> None:
    pictures = DecodedPictures(max_bytes=MEGABYTE, max_item_bytes=MEGABYTE)
    decode, calls = counting(lambda: picture(100))
    first = pictures.get("a", decode)
    assert pictures.get("a", decode) is first
    assert len(calls) == 1
    assert pictures.bytes == picture_bytes(first) == 100 * 100 * 4  # RGB takes four bytes a pixel


def test_the_least_recently_used_go_first_past_max_bytes() -> None:
    pictures = DecodedPictures(max_bytes=3 * 40_000, max_item_bytes=MEGABYTE)
    for key in "abc":
        pictures.get(key, lambda: picture(100))  # 40,000 bytes each
    pictures.get("a", lambda: picture(1))  # used: b is now the oldest
    pictures.get("d", lambda: picture(100))
    assert len(pictures) == 3 and pictures.bytes == 3 * 40_000
    decode, calls = counting(lambda: picture(100))
    pictures.get("b", decode)
    assert calls == [1]  # b went for d
    for key in "adb":
        pictures.get(key, decode)
    assert calls == [1]  # c went for b, and the rest stayed
    pictures.get("c", decode)
    assert calls == [1, 1]


def test_large_pictures_are_never_kept() -> None:
    pictures = DecodedPictures(max_bytes=MEGABYTE, max_item_bytes=40_000)
    pictures.get("small", lambda: picture(100))
    pictures.get("large", lambda: picture(101))
    assert len(pictures) == 1 and pictures.bytes == 40_000


def test_threads_asking_at_once_share_one_decode() -> None:
    pictures = DecodedPictures(max_bytes=MEGABYTE, max_item_bytes=MEGABYTE)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> Image.Image:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return picture(100)

    results: list[Image.Image] = []
    first = threading.Thread(target=lambda: results.append(pictures.get("a", slow)))
    first.start()
    assert started.wait(10)
    waiters = [threading.Thread(target=lambda: results.append(pictures.get("a", slow))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)
        assert not thread.is_alive()
    assert calls == [1]
    assert len(results) == 4 and all(result is results[0] for result in results)


def test_a_failed_decode_fails_its_waiters_and_keeps_nothing() -> None:
    pictures = DecodedPictures(max_bytes=MEGABYTE, max_item_bytes=MEGABYTE)
    started, release = threading.Event(), threading.Event()

    def broken() -> Image.Image:
        started.set()
        assert release.wait(10)
        raise OSError("truncated")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            pictures.get("a", broken)
        except OSError as error:
            errors.append(error)

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(10)
    waiter = threading.Thread(target=ask)
    waiter.start()
    release.set()
    for thread in (first, waiter):
        thread.join(10)
    assert [str(error) for error in errors] == ["truncated", "truncated"]
    assert len(pictures) == 0
    assert pictures.get("a", lambda: picture(10)).size == (10, 100)  # the next ask decodes again


@pytest.mark.parametrize("mode", [ResizeMode.FIT, ResizeMode.CROP])
def test_renditions_are_the_same_from_a_kept_picture(mode: ResizeMode) -> None:
    noise = Image.effect_noise((960, 640), 40).convert("RGB")
    data = encode(noise, "JPEG", quality=90)
    pictures = DecodedPictures(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    reuse = Reuse(pictures, "originals/photo")
    options = EncodeOptions()
    # 240x160 and 200x100 both decode at 1/2 scale: the second finds it kept.
    first = render(data, spec(240, 160, "jpg", mode), LIMITS, options, reuse=reuse)
    assert len(pictures) == 1
    kept = pictures.bytes
    second = render(data, spec(200, 100, "jpg", mode), LIMITS, options, reuse=reuse)
    again = render(data, spec(240, 160, "jpg", mode), LIMITS, options, reuse=reuse)
    assert (len(pictures), pictures.bytes) == (1, kept) == (1, 480 * 320 * 4)
    assert first.data == again.data == render(data, spec(240, 160, "jpg", mode), LIMITS, options).data
    assert second.data == render(data, spec(200, 100, "jpg", mode), LIMITS, options).data


def test_only_jpegs_decoded_at_a_scale_are_kept() -> None:
    pictures = DecodedPictures(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    png = encode(Image.effect_noise((400, 300), 40).convert("RGB"), "PNG")
    render(png, spec(100, 75), LIMITS, EncodeOptions(), reuse=Reuse(pictures, "originals/png"))
    assert len(pictures) == 0


class _Watched(DecodedPictures):
    """Real pictures that note each key get() had to decode itself."""

    def __init__(self, max_bytes: int, max_item_bytes: int) -> None:
        super().__init__(max_bytes, max_item_bytes)
        self.decoded: list[object] = []

    def get(
        self,
        key: Hashable,
        decode: Callable[[], Image.Image],
        source: tuple[Hashable, KeptSource] | None = None,
    ) -> Image.Image:
        def noted() -> Image.Image:
            self.decoded.append(key)
            return decode()

        return super().get(key, noted, source)


def test_an_uploads_probe_keeps_its_decode_for_the_first_rendition() -> None:
    noise = Image.effect_noise((1600, 900), 40).convert("RGB")
    data = encode(noise, "JPEG", quality=90)
    pictures = _Watched(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    reuse = Reuse(pictures, "originals/photo")
    # A 1600x900 photo is no working copy's source for these; each size
    # decodes it at 1/2 (each crop and fit but 200x200's fit, at 1/4).
    sizes = frozenset({Size(420, 420), Size(320, 240), Size(200, 200)})
    info = probe(data, LIMITS, KeptUpload(reuse, sizes, upscale=True))
    assert (info.width, info.height) == (1600, 900)
    assert (len(pictures), pictures.bytes) == (1, 800 * 450 * 4)

    options = EncodeOptions()
    first = render(data, spec(420, 420, "jpg", ResizeMode.FIT), LIMITS, options, reuse=reuse)
    assert pictures.decoded == []  # the probe's pixels, not a decode of their own
    assert first.data == render(data, spec(420, 420, "jpg", ResizeMode.FIT), LIMITS, options).data


def test_a_probe_keeps_the_likeliest_decode_small_enough_to_keep() -> None:
    data = encode(Image.effect_noise((1600, 900), 40).convert("RGB"), "JPEG", quality=90)
    pictures = _Watched(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    reuse = Reuse(pictures, "originals/photo")
    # 420x420 cropped decodes it whole (5.8 MB, too large), fitted at 1/2.
    probe(data, LIMITS, KeptUpload(reuse, frozenset({Size(420, 420)}), upscale=True))
    assert (len(pictures), pictures.bytes) == (1, 800 * 450 * 4)
    render(data, spec(420, 420, "jpg", ResizeMode.FIT), LIMITS, EncodeOptions(), reuse=reuse)
    assert pictures.decoded == []


def test_a_probe_keeps_nothing_too_large_to_keep_or_of_no_scale() -> None:
    sizes = frozenset({Size(420, 420)})
    photo = encode(Image.effect_noise((1600, 900), 40).convert("RGB"), "JPEG", quality=90)
    small = _Watched(max_bytes=16 * MEGABYTE, max_item_bytes=MEGABYTE)  # 800x450 takes 1.4 MB
    probe(photo, LIMITS, KeptUpload(Reuse(small, "originals/photo"), sizes, upscale=True))
    png = encode(Image.effect_noise((1600, 900), 40).convert("RGB"), "PNG")
    roomy = _Watched(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    probe(png, LIMITS, KeptUpload(Reuse(roomy, "originals/png"), sizes, upscale=True))
    assert (len(small), len(roomy)) == (0, 0)


def test_an_offer_never_counts_a_picture_twice() -> None:
    pictures = DecodedPictures(max_bytes=MEGABYTE, max_item_bytes=MEGABYTE)
    pictures.offer("a", picture(100))
    pictures.offer("a", picture(100))
    kept = pictures.get("a", lambda: picture(50))
    assert (len(pictures), pictures.bytes, kept.size) == (1, 100 * 100 * 4, (100, 100))


# Rendering from a kept decode, without the bytes (render_kept)


def _photo(orientation: int = 1, profile: bool = False) -> bytes:
    """A 1600x900 JPEG as stored (noise: every change of filter or box
    shows), with an EXIF orientation and a wide-gamut profile if asked."""
    noise = Image.effect_noise((1600, 900), 40).convert("RGB")
    gradient = Image.linear_gradient("L").resize((1600, 900)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"quality": 90, "exif": exif.tobytes()}
    if profile:
        params["icc_profile"] = rgb_profile()
    return encode(Image.blend(noise, gradient, 0.5), "JPEG", **params)


def _kept_by_probe(data: bytes, target: DerivedSpec) -> Reuse:
    # Not the whole photo (5.8 MB): each target's own scale, 1/2, is kept.
    pictures = DecodedPictures(max_bytes=16 * MEGABYTE, max_item_bytes=4 * MEGABYTE)
    reuse = Reuse(pictures, "originals/photo")
    probe(data, LIMITS, KeptUpload(reuse, frozenset({target.size}), upscale=True))
    return reuse


@pytest.mark.parametrize(("orientation", "profile"), [(1, False), (6, True), (3, False), (8, True)])
@pytest.mark.parametrize(
    "target",
    [
        spec(420, 420, "jpg", ResizeMode.FIT),
        spec(230, 230),
        spec(300, 300, "png", ResizeMode.PAD),
        spec(360, 270, "webp", ResizeMode.FIT),
        replace(spec(240, 240), focus=FocalPoint(0.8, 0.3)),
    ],
    ids=["fit", "crop", "pad-png", "fit-webp", "focused-crop"],
)
def test_a_kept_source_renders_as_its_bytes_do(orientation: int, profile: bool, target: DerivedSpec) -> None:
    data = _photo(orientation, profile)
    reuse = _kept_by_probe(data, target)
    options = EncodeOptions()
    assert kept_scale(target, options, reuse) is not None
    kept = render_kept(target, options, reuse=reuse)
    assert kept is not None
    # The same bytes: upright, in sRGB, planned and filtered the same.
    assert kept == render(data, target, LIMITS, options)


def test_a_working_copys_kept_decode_renders_as_the_copy_does() -> None:
    # A render of the copy keeps its decode (and what its header said) for
    # the next size, which is planned on the original, as from the bytes.
    copy = _photo(6, profile=True)  # a copy is upright and sRGB, but any JPEG will do here
    original = (2400, 4267)  # upright, as the copy's 900x1600 after its orientation
    pictures = DecodedPictures(max_bytes=16 * MEGABYTE, max_item_bytes=8 * MEGABYTE)
    reuse = Reuse(pictures, "derived/copy")
    options = EncodeOptions()
    first, then = spec(200, 300, "jpg", ResizeMode.FIT), spec(150, 240, "jpg", ResizeMode.FIT)
    render(copy, first, LIMITS, options, source_size=original, reuse=reuse)
    assert kept_scale(then, options, reuse, original) is not None
    kept = render_kept(then, options, source_size=original, reuse=reuse)
    assert kept == render(copy, then, LIMITS, options, source_size=original)


def test_a_source_not_kept_at_the_scale_asked_renders_nothing() -> None:
    data = _photo()
    options = EncodeOptions()
    reuse = _kept_by_probe(data, spec(420, 420, "jpg", ResizeMode.FIT))  # kept at 1/2
    elsewhere = Reuse(reuse.pictures, "originals/other")
    smart = spec(420, 420, "jpg", ResizeMode.SMART)
    at_a_quarter = spec(200, 200, "jpg", ResizeMode.FIT)
    for target, named in (
        (spec(420, 420, "jpg", ResizeMode.FIT), elsewhere),
        (smart, reuse),
        (at_a_quarter, reuse),
    ):
        assert kept_scale(target, options, named) is None
        assert render_kept(target, options, reuse=named) is None
    assert render_kept(at_a_quarter, options) is None  # nothing to share at all


def test_what_a_source_said_is_kept_while_a_picture_of_it_is() -> None:
    pictures = DecodedPictures(max_bytes=3 * 40_000, max_item_bytes=MEGABYTE)
    facts = KeptSource((100, 100), 1, None)
    pictures.offer(("a", (50, 50)), picture(100), ("a", facts))
    pictures.get(("a", (25, 25)), lambda: picture(100), ("a", facts))
    assert pictures.source("a") == facts
    pictures.get(("b", (50, 50)), lambda: picture(100), ("b", facts))
    pictures.get(("c", (50, 50)), lambda: picture(100))  # evicts a's first picture
    assert pictures.source("a") == facts  # its second is still kept
    pictures.get(("d", (50, 50)), lambda: picture(100))  # and now that one
    assert (pictures.source("a"), pictures.source("b")) == (None, facts)
    assert pictures.peek(("a", (25, 25))) is None and pictures.holds(("b", (50, 50)))
