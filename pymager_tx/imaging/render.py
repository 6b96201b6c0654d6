"""
Image work as pure functions from bytes to bytes.

No Twisted, no I/O, no globals: callers run these on a thread pool.  Untrusted
data is opened only with an allow-list of decoders, its pixel count is checked
from the header before anything is decoded (and again for every animation
frame, which may declare a larger size than the first), frames are counted
before any is decoded, a deadline is checked between stages, and every way a
decoder can fail becomes one domain error; running out of memory at any stage
becomes OutOfMemory, which is the server's condition, not the image's.

Memory, per derivation: the decoded picture (a JPEG at the smallest DCT scale
that still leaves twice the output size, anything else at full size) at up to
4 bytes a pixel, plus one converted copy of it for palettes, 1-bit and 16-bit
pictures (16-bit greys: 4 bytes a pixel), plus reduce()'s intermediate, at
most a quarter of that; everything after the resize is output-sized.  So at
most about 2 x max_pixels x 4 bytes for a PNG of max_pixels, far less for a
JPEG.  An animation holds one full frame (4 bytes a pixel) and every resized
frame; max_animation_pixels bounds the decoding work.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile

from pymager_tx.core.formats import ImageFormat, format_for_pillow, format_named
from pymager_tx.core.model import DerivedSpec, ResizeMode, Size
from pymager_tx.imaging import geometry
from pymager_tx.imaging.attention import smart_plan
from pymager_tx.imaging.bands import Helpers, banded_resize
from pymager_tx.imaging.decoded import KeptSource, Reuse, bytes_per_pixel
from pymager_tx.imaging.encoders import Encoding, encode_animation, encode_still, lossless_source
from pymager_tx.imaging.geometry import Plan
from pymager_tx.imaging.gif import gif_canvas
from pymager_tx.imaging.pixels import (
    eight_bit,
    flatten,
    has_alpha,
    is_transparent,
    pad,
    resizable,
    to_srgb,
)
from pymager_tx.imaging.summary import Summary, summarize
from pymager_tx.imaging.untrusted import (
    DecodeLimits,
    check_deadline,
    check_pixels,
    decoding,
    is_jpeg,
    memory_guarded,
    opened,
    pixel_limit,
)

__all__ = [
    "DecodeLimits",
    "EncodeOptions",
    "Helpers",
    "ImageInfo",
    "KeptUpload",
    "Rendered",
    "Reuse",
    "kept_scale",
    "make_working_copy",
    "probe",
    "render",
    "render_kept",
    "working_copy_covers",
    "worth_a_working_copy",
]

# Sources whose animations are kept, and the targets that can show them.
_ANIMATED_SOURCES = frozenset({"GIF", "WEBP", "PNG"})
_ANIMATED_TARGETS = frozenset({"GIF", "WEBP"})
# A working copy is only worth making when it is at most this scale of the source.
_WORKING_SCALE_LIMIT = 0.5
_DEFAULT_FRAME_MS = 100


@dataclass(frozen=True)
class EncodeOptions:
    jpeg_quality: int = 85
    webp_quality: int = 80
    background: tuple[int, int, int] = (255, 255, 255)  # under transparency (JPEG, BMP), and padding
    jpeg_progressive: bool = True
    # Below this many pixels a JPEG is baseline all the same: a thumbnail
    # arrives in a round trip or two, so showing it in passes gains nothing,
    # while browsers decode baseline faster and it is written in a quarter
    # of the time (2 ms of a 420x420's first request), for 2% more bytes.
    jpeg_progressive_min_pixels: int = 250_000
    jpeg_subsampling: str = "4:2:0"  # "4:4:4", "4:2:2" or "4:2:0"
    upscale: bool = True  # enlarge small originals (false: never enlarge)


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int  # as displayed, after the EXIF orientation
    height: int
    summary: Summary | None = None  # placeholder and dominant colour


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: ImageFormat
    width: int
    height: int


@dataclass(frozen=True)
class KeptUpload:
    """Where probe keeps an upload's decode for its first renditions:
    reuse names the key the upload will be stored under; sizes and
    upscale are the service's, from which the likely scale follows."""

    reuse: Reuse
    sizes: frozenset[Size]
    upscale: bool


@memory_guarded("probing")
def probe(data: bytes, limits: DecodeLimits, keep: KeptUpload | None = None) -> ImageInfo:
    """Check that data is a whole image we accept, and describe it.

    Decodes the first frame completely (JPEGs at 1/8 scale, which still reads
    every byte), so truncated and corrupt files are refused here rather than
    when someone first asks for a thumbnail.  With keep, a small JPEG is
    decoded at the scale its renditions will most likely ask for instead,
    and kept for them: a 2 MP photo's upload costs 1.5-3 ms more, and its
    first rendition 3-4 ms less (bench/RESULTS.md, stop 25).
    """
    with opened(data, limits) as image:
        assert image.format is not None
        with decoding():
            orientation = _orientation_before_decoding(image)
            stored = image.size  # before draft() shrinks it
            kept_at = None
            if is_jpeg(image):
                kept_at = _scale_to_keep(image, orientation, keep)
                image.draft(None, kept_at or (1, 1))
            image.load()
            icc = _as_bytes(image.info.get("icc_profile"))
            summary = summarize(image, orientation, icc)
            if keep is not None and kept_at is not None:
                picture = _detached(resizable(image), image)
                facts = KeptSource(stored, orientation, icc)
                keep.reuse.pictures.offer((keep.reuse.source, kept_at), picture, (keep.reuse.source, facts))
        width, height = geometry.upright_size(stored, orientation)
        return ImageInfo(format_for_pillow(image.format, image.get_format_mimetype()), width, height, summary)


@memory_guarded("rendering")
def render(
    data: bytes,
    spec: DerivedSpec,
    limits: DecodeLimits,
    options: EncodeOptions,
    deadline: float | None = None,
    source_size: tuple[int, int] | None = None,
    helpers: Helpers | None = None,
    reuse: Reuse | None = None,
) -> Rendered:
    """Bring data to spec's size in spec's mode (crop, fit or pad) and encode
    it in spec's format: upright, 8-bit sRGB, without metadata.

    An animation stays one for GIF and WebP targets within the frame budget
    of limits; otherwise the first frame is used.  deadline is a
    time.monotonic() value, checked between stages and frames: past it,
    DerivationTooCostly.  source_size: data is a working copy of an upright
    source of that size (see working_copy_covers); the rendition is planned
    on the source, so it comes out as the source's would.  helpers: threads
    that may take a share of the resize (see imaging.bands); reuse: where
    the source may be found decoded, and is kept (see imaging.decoded).
    """
    with opened(data, limits) as image:
        with decoding():
            orientation = _orientation_before_decoding(image)
        stored = image.size
        upright = geometry.upright_size(stored, orientation)
        plan = _planned(upright, spec, options, source_size)
        if spec.mode is ResizeMode.SMART and spec.focus is None:
            plan = smart_plan(image, plan, upright, orientation, spec.size, options.upscale)
            check_deadline(deadline, "after finding the subject")
        with decoding():
            animated = _animates(image, data, plan, spec.output, limits)
        encoding = _encoding(options, lossless_source(image, data))
        if animated:
            return _render_animation(
                image, plan, orientation, spec.output, limits, options, deadline, encoding
            )
        picture = _reduced(image, plan, orientation, deadline, stored, helpers, reuse)
    return _encoded(picture, plan, spec, options, encoding, deadline)


def kept_scale(
    spec: DerivedSpec, options: EncodeOptions, reuse: Reuse, source_size: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """The scale (a draft request) at which render_kept would find the
    source reuse names decoded, if it would; None if it would not: no
    picture of it kept at the scale spec needs, or a smart crop (whose
    subject is found in the source's own pixels).  Arithmetic only."""
    found = _kept_plan(spec, options, reuse, source_size)
    return None if found is None or not reuse.pictures.holds((reuse.source, found[2])) else found[2]


@memory_guarded("rendering")
def render_kept(
    spec: DerivedSpec,
    options: EncodeOptions,
    deadline: float | None = None,
    source_size: tuple[int, int] | None = None,
    helpers: Helpers | None = None,
    reuse: Reuse | None = None,
) -> Rendered | None:
    """render(data, ...) of the source reuse names, from a picture of it
    kept decoded at the scale spec needs, without its bytes: the same
    rendition, for neither reading them nor opening them again (a JPEG's
    header and its count of scans were checked when it was decoded).
    None where kept_scale is None: render from the bytes then."""
    found = None if reuse is None else _kept_plan(spec, options, reuse, source_size)
    if reuse is None or found is None:
        return None
    source, plan, scaled = found
    picture = reuse.pictures.peek((reuse.source, scaled))
    if picture is None:
        return None  # let go meanwhile
    resized = to_srgb(_resized(picture, plan, source.orientation, source.stored, helpers), source.icc_profile)
    # A JPEG: lossy, as lossless_source would find it.
    return _encoded(resized, plan, spec, options, _encoding(options, False), deadline)


def _kept_plan(
    spec: DerivedSpec, options: EncodeOptions, reuse: Reuse, source_size: tuple[int, int] | None
) -> tuple[KeptSource, Plan, tuple[int, int]] | None:
    """What the kept source said of itself, spec's plan on it and the
    scale that plan decodes it at; None if nothing of it is kept, or for
    a smart crop."""
    source = reuse.pictures.source(reuse.source)
    if source is None or (spec.mode is ResizeMode.SMART and spec.focus is None):
        return None
    plan = _planned(geometry.upright_size(source.stored, source.orientation), spec, options, source_size)
    return source, plan, geometry.draft_request(source.stored, plan.reduction)


@memory_guarded("making a working copy of")
def make_working_copy(
    data: bytes,
    limits: DecodeLimits,
    sizes: Iterable[Size],
    options: EncodeOptions,
    deadline: float | None = None,
    helpers: Helpers | None = None,
    reuse: Reuse | None = None,
) -> Rendered | None:
    """A reduced copy of a still image, from which every size in sizes can be
    derived in every mode (render(copy.data, ...)) nearly as well as from
    data, at a fraction of the decoding cost.

    The copy is upright, 8-bit sRGB and without metadata; a PNG for
    losslessly compressed sources and for pictures with alpha, else a JPEG
    (quality 90, its chroma subsampled as options has the renditions').  A
    PNG copy of a lossy source says so, so that a WebP derived from either
    copy is lossless exactly when one derived from the source would be.
    None when data is an animation, or when the copy would be more than half
    the source's size (not worth it).  helpers, reuse: as render's.
    """
    wanted = list(sizes)
    with opened(data, limits) as image:
        with decoding():
            orientation = _orientation_before_decoding(image)
            animated = image.format in _ANIMATED_SOURCES and bool(getattr(image, "is_animated", False))
        lossless = lossless_source(image, data)
        upright = geometry.upright_size(image.size, orientation)
        size = None if animated else _working_size(upright, wanted)
        if size is None:
            return None
        picture = _reduced(
            image, geometry.whole(upright, size), orientation, deadline, helpers=helpers, reuse=reuse
        )
    output = format_named("png" if lossless or has_alpha(picture) else "jpeg")
    working = Encoding(
        # 90, not 95: renditions from either differ by 0.02 dB once encoded
        # at 85, and the copy decodes 1.5 ms faster at 37% less size.
        jpeg_quality=90,
        jpeg_progressive=False,
        # As the renditions: the copy has twice their pixels on each side,
        # so its subsampled chroma still has as many as theirs (4:2:0 for
        # 4:2:0 answers: 0.02 dB, 2 ms less decoding for every later size).
        jpeg_subsampling=options.jpeg_subsampling,
        webp_quality=options.webp_quality,
        png_compress_level=1,
        lossless_source=lossless,
        png_marks_source=True,
    )
    return Rendered(encode_still(picture, output, working), output, *picture.size)


def worth_a_working_copy(source_width: int, source_height: int, sizes: Iterable[Size]) -> bool:
    """Whether a working copy of an upright source this large would be at
    most half its size, for these sizes: the test make_working_copy applies,
    without opening anything."""
    return _working_size((source_width, source_height), list(sizes)) is not None


def _working_size(upright: tuple[int, int], sizes: list[Size]) -> tuple[int, int] | None:
    """The size of the working copy of an upright source for these sizes;
    None when it would be more than half the source's."""
    if not sizes:
        return None
    scale = geometry.working_scale(upright, sizes)
    if scale > _WORKING_SCALE_LIMIT:
        return None
    return max(1, math.ceil(upright[0] * scale)), max(1, math.ceil(upright[1] * scale))


def working_copy_covers(
    working_width: int, working_height: int, source_width: int, source_height: int, spec: DerivedSpec
) -> bool:
    """Whether spec may be derived from a working copy of this size (of an
    upright source of source_width x source_height) instead of the source:
    the region it uses still has twice the output's pixels on each side
    (render it with source_size, so that it comes out the same size).  Holds
    for any upscale setting: a covered derivation never enlarges.  Never for a smart crop without a
    focal point: its subject is found in the original's own pixels, since a
    working copy's could move it by a step of the analysis grid."""
    if spec.mode is ResizeMode.SMART and spec.focus is None:
        return False
    return geometry.covers(
        (working_width, working_height), (source_width, source_height), spec.size, spec.mode
    )


# Stages


def _planned(
    upright: tuple[int, int], spec: DerivedSpec, options: EncodeOptions, source_size: tuple[int, int] | None
) -> Plan:
    """spec's plan on an upright source of this size, or, with source_size,
    on the source a working copy of this size was made of."""
    focus = None if spec.focus is None else (spec.focus.x, spec.focus.y)
    if source_size is None:
        return geometry.plan(upright, spec.size, spec.mode, options.upscale, focus)
    planned = geometry.plan(source_size, spec.size, spec.mode, options.upscale, focus)
    return geometry.on_copy(planned, source_size, upright)


def _encoded(
    picture: Image.Image,
    plan: Plan,
    spec: DerivedSpec,
    options: EncodeOptions,
    encoding: Encoding,
    deadline: float | None,
) -> Rendered:
    output = spec.output
    if spec.alpha_output is not None and is_transparent(picture):
        output = spec.alpha_output  # a negotiated fallback: PNG keeps the transparency
    picture = _finished(picture, plan, output, options)
    check_deadline(deadline, "after resizing")
    return Rendered(encode_still(picture, output, encoding), output, *picture.size)


def _reduced(
    image: ImageFile.ImageFile,
    plan: Plan,
    orientation: int,
    deadline: float | None,
    stored: tuple[int, int] | None = None,
    helpers: Helpers | None = None,
    reuse: Reuse | None = None,
) -> Image.Image:
    """Decode (JPEGs at reduced scale), resize the plan's box to its size,
    turn upright, and bring to 8-bit sRGB.  The resize runs on the picture as
    stored and the transpose after, on the small result.  stored: the size
    as stored, if image was decoded (smaller) already; reuse: where a JPEG
    not decoded yet may be found decoded at this scale, and is kept."""
    stored = stored or image.size
    icc = image.info.get("icc_profile")
    scaled = geometry.draft_request(stored, plan.reduction) if is_jpeg(image) else None

    def decoded() -> Image.Image:
        with decoding():
            if scaled is not None:
                image.draft(None, scaled)
            image.load()
            return resizable(image)

    if reuse is not None and scaled is not None and image.tile:
        facts = KeptSource(stored, orientation, _as_bytes(icc))
        source = reuse.pictures.get(
            (reuse.source, scaled), lambda: _detached(decoded(), image), (reuse.source, facts)
        )
    else:
        source = decoded()
    check_deadline(deadline, "after decoding")
    with decoding():
        resized = _resized(source, plan, orientation, stored, helpers)
        del source
        image.close()  # frees the full-size decode now, not when the caller is done
        return to_srgb(resized, _as_bytes(icc))


def _resized(
    source: Image.Image, plan: Plan, orientation: int, stored: tuple[int, int], helpers: Helpers | None
) -> Image.Image:
    """The plan's box of a source decoded (at stored / source.size scale),
    resized to its size, turned upright, 8-bit (its colours still its own)."""
    box = geometry.stored_box(plan.box, stored, orientation)
    size = geometry.stored_size(plan.size, orientation)
    resized = banded_resize(
        source,
        size,
        Image.Resampling.LANCZOS,
        geometry.scaled_box(box, stored, source.size),
        geometry.REDUCING_GAP,
        helpers,
    )
    return eight_bit(geometry.transpose(resized, orientation))


def _scale_to_keep(
    image: ImageFile.ImageFile, orientation: int, keep: KeptUpload | None
) -> tuple[int, int] | None:
    """The draft request (as _reduced makes it) at which to decode a JPEG
    being probed so that its first renditions find it kept; None if none of
    their decodes is small enough to keep."""
    if keep is None:
        return None
    stored = image.size
    upright = geometry.upright_size(stored, orientation)
    working = _working_size(upright, list(keep.sizes))
    if working is not None:
        # Its first rendition makes the working copy, the rest start there.
        requests = [geometry.draft_request(stored, geometry.whole(upright, working).reduction)]
    else:
        requests = geometry.likely_drafts(stored, orientation, keep.sizes, keep.upscale)
    # The decoder rounds each side of stored / scale up: at most one more.
    per_pixel = bytes_per_pixel(image.mode)
    limit = keep.reuse.pictures.max_item_bytes
    return next(((w, h) for w, h in requests if (w + 1) * (h + 1) * per_pixel <= limit), None)


def _detached(picture: Image.Image, image: ImageFile.ImageFile) -> Image.Image:
    """picture, kept apart from image's file (which closing image breaks).

    A new Image around the same decoded pixels, not a copy of them: closing
    image only lets go of its own reference, and a 2 MB copy cost a first
    derivation of a 2 MP JPEG 0.7 ms of its 15 (bench/RESULTS.md, stop 24).
    _new() is how Pillow's own operations wrap a core image."""
    return picture._new(picture.im) if picture is image else picture


def _finished(picture: Image.Image, plan: Plan, output: ImageFormat, options: EncodeOptions) -> Image.Image:
    if has_alpha(picture) and not output.supports_alpha:
        picture = flatten(picture, options.background)
    if plan.canvas is not None:
        picture = pad(picture, plan.canvas, options.background)
    return picture


def _render_animation(
    image: ImageFile.ImageFile,
    plan: Plan,
    orientation: int,
    output: ImageFormat,
    limits: DecodeLimits,
    options: EncodeOptions,
    deadline: float | None,
    encoding: Encoding,
) -> Rendered:
    """Every frame resized the same way; durations and loop count kept."""
    box = geometry.stored_box(plan.box, image.size, orientation)
    size = geometry.stored_size(plan.size, orientation)
    icc = _as_bytes(image.info.get("icc_profile"))
    loop = image.info.get("loop")
    frames: list[Image.Image] = []
    durations: list[int] = []
    for index in range(_frame_count(image)):
        with decoding():
            image.seek(index)
            # A GIF frame may reach past the canvas, and Pillow grows the canvas.
            check_pixels(image.size, limits)
            whole = image.convert("RGBA")
            resized = whole.resize(
                size, Image.Resampling.LANCZOS, box=box, reducing_gap=geometry.REDUCING_GAP
            )
            del whole
            frame = to_srgb(geometry.transpose(resized, orientation), icc)
        frames.append(_finished(frame, plan, output, options))
        durations.append(_duration(image.info.get("duration")))
        check_deadline(deadline, f"after frame {index + 1}")
    data = encode_animation(
        frames,
        durations,
        loop if isinstance(loop, int) else None,
        output,
        encoding,
        after_frame=lambda index: check_deadline(deadline, f"encoding frame {index + 1}"),
    )
    width, height = frames[0].size
    return Rendered(data, output, width, height)


def _animates(
    image: ImageFile.ImageFile, data: bytes, plan: Plan, output: ImageFormat, limits: DecodeLimits
) -> bool:
    """Whether to keep an animation, counted from the headers before any
    frame is decoded (GIF: a scan of its blocks; WebP and APNG: declared,
    and no frame may reach past their canvas).  Frames times the canvas
    every frame covers bounds the decoding; frames times the output size,
    the resizing and encoding; both must be within max_animation_pixels."""
    if output.pillow_name not in _ANIMATED_TARGETS or image.format not in _ANIMATED_SOURCES:
        return False
    if not getattr(image, "is_animated", False):
        return False
    frames = _frame_count(image)
    width, height = gif_canvas(data) if image.format == "GIF" else image.size
    output_width, output_height = plan.output_size
    return (
        frames <= limits.max_frames
        and width * height <= pixel_limit(limits)
        and frames * width * height <= limits.max_animation_pixels
        and frames * output_width * output_height <= limits.max_animation_pixels
    )


def _frame_count(image: Image.Image) -> int:
    return int(getattr(image, "n_frames", 1))


def _duration(value: object) -> int:
    return round(value) if isinstance(value, int | float) and value >= 0 else _DEFAULT_FRAME_MS


def _encoding(options: EncodeOptions, lossless: bool) -> Encoding:
    return Encoding(
        jpeg_quality=options.jpeg_quality,
        jpeg_progressive=options.jpeg_progressive,
        jpeg_progressive_min_pixels=options.jpeg_progressive_min_pixels,
        jpeg_subsampling=options.jpeg_subsampling,
        webp_quality=options.webp_quality,
        lossless_source=lossless,
        background=options.background,
    )


def _orientation_before_decoding(image: ImageFile.ImageFile) -> int:
    """The EXIF orientation still to apply to image as Pillow decodes it.

    Only a JPEG is worth measuring before it is decoded (draft() needs the
    size); anything else is decoded first, because some decoders apply the
    orientation themselves (Pillow's TIFF plugin turns the picture upright
    while loading and drops the tag), and PNG reads a late eXIf only then."""
    if not is_jpeg(image):
        image.load()
    return _orientation(image)


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _as_bytes(value: object) -> bytes | None:
    return value if isinstance(value, bytes) else None
