"""
Quality check: what the server derives against a direct render of the original.

    python bench/quality.py [--corpus-dir bench/photos] [--format png]

For every corpus image x size x mode (crop and fit), GET the derived image
from a running pymager-tx and render the same spec in this process with
pymager_tx.imaging.render.render from this checkout, straight from the original
file.  The PSNR between the two says how far the server's pipeline (soon: a
reduced working copy made once per original) strays from the reference.
With --format png both sides are lossless, so the PSNR measures the pipeline
alone; with jpg it also includes two independent JPEG encodings.

Passes when the median is >= 40 dB and no pair is below 35 dB (identical
images count as infinite).  Standalone, it starts its own server.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from statistics import median

from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).parent))
import loadgen
import photos
import servers

from pymager_tx.config import ImageSettings
from pymager_tx.core.model import DerivedSpec, ResizeMode, Size
from pymager_tx.imaging.formats import output_format_for
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, render

SIZES = ("150x150", "200x300", "320x240", "400x225", "400x400")
MODES = (ResizeMode.CROP, ResizeMode.FIT)
MEDIAN_TARGET, MINIMUM_TARGET = 40.0, 35.0


def premultiplied(image: Image.Image) -> Image.Image:
    """RGBA with the colour multiplied by alpha (composited onto black): colour
    under a transparent pixel is invisible, and a resize may set it freely."""
    rgba = image.convert("RGBA")
    colour = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    colour.putalpha(rgba.getchannel("A"))
    return colour


def psnr(first: Image.Image, second: Image.Image, premultiply: bool = True) -> float:
    """Peak signal-to-noise ratio over all channels, in dB; inf if identical,
    -inf if the sizes differ (a wrong size is the worst failure).  With alpha,
    over premultiplied RGBA (premultiply=False: straight RGBA, which also
    counts the invisible colour under transparent pixels)."""
    if first.size != second.size:
        return -math.inf
    alpha = "A" in first.mode + second.mode
    mode = "RGBA" if alpha else "RGB"
    if alpha and premultiply:
        first, second = premultiplied(first), premultiplied(second)
    difference = ImageChops.difference(first.convert(mode), second.convert(mode))
    histogram = difference.histogram()  # 256 bins per channel
    squared = sum(count * (value % 256) ** 2 for value, count in enumerate(histogram))
    samples = first.width * first.height * len(mode)
    if squared == 0:
        return math.inf
    return 10 * math.log10(255**2 / (squared / samples))


@dataclass
class QualityResult:
    extension: str
    scores: dict[str, float] = field(default_factory=dict)  # derived name -> PSNR dB
    straight: dict[str, float] = field(default_factory=dict)  # with alpha: PSNR over straight RGBA
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def median(self) -> float:
        return median(self.scores.values()) if self.scores else math.nan

    @property
    def minimum(self) -> tuple[str, float]:
        if not self.scores:
            return "-", math.nan
        name = min(self.scores, key=lambda key: self.scores[key])
        return name, self.scores[name]

    @property
    def passed(self) -> bool:
        return (
            not self.errors
            and bool(self.scores)
            and self.median >= MEDIAN_TARGET
            and self.minimum[1] >= MINIMUM_TARGET
        )

    def lines(self) -> list[str]:
        name, lowest = self.minimum
        identical = sum(1 for value in self.scores.values() if value == math.inf)
        return [
            f"Quality ({len(self.scores)} derived images as .{self.extension}, crop and fit, "
            f"sizes {', '.join(SIZES)}; {self.seconds:.0f} s): median PSNR {self.median:.1f} dB, "
            f"min {lowest:.1f} dB ({name}); {identical} identical to the reference; "
            f"{len(self.errors)} errors; target median >= {MEDIAN_TARGET:.0f}, min >= {MINIMUM_TARGET:.0f}: "
            f"{'PASS' if self.passed else 'FAIL'}",
            *[f"  error: {error}" for error in self.errors[:10]],
            *(
                [
                    f"  Images with alpha ({len(self.straight)}) are scored premultiplied; over straight "
                    f"RGBA (counting colour under transparent pixels) their min would be "
                    f"{min(self.straight.values()):.1f} dB "
                    f"({min(self.straight, key=self.straight.__getitem__)})."
                ]
                if self.straight
                else []
            ),
        ]


def derived_name(image_id: str, size: str, mode: ResizeMode, extension: str) -> str:
    suffix = "" if mode is ResizeMode.CROP else f"-{mode}"
    return f"{image_id}-{size}{suffix}.{extension}"


def run_quality(
    base_url: str, corpus: list[photos.Photo], directory: Path, extension: str = "png", threads: int = 2
) -> QualityResult:
    """The originals must already be uploaded under their image IDs."""
    settings = ImageSettings.model_validate({})  # the server runs with these defaults
    limits = DecodeLimits(max_pixels=settings.max_pixels, decoders=tuple(settings.decoders))
    options = EncodeOptions(jpeg_quality=settings.jpeg_quality, webp_quality=settings.webp_quality)
    output = output_format_for(extension)
    assert output is not None, extension
    result = QualityResult(extension)
    started = time.perf_counter()
    jobs = [(photo, size, mode) for photo in corpus for size in SIZES for mode in MODES]

    def score(photo: photos.Photo, size: str, mode: ResizeMode) -> None:
        name = derived_name(photo.image_id, size, mode, extension)
        try:
            with urllib.request.urlopen(f"{base_url}/derived/{name}", timeout=120) as response:
                body = response.read()
        except OSError as error:
            result.errors.append(f"{name}: {error}")
            return
        spec = DerivedSpec(Size.parse(size), output, mode)
        reference = render((directory / photo.name).read_bytes(), spec, limits, options)
        with Image.open(BytesIO(reference.data)) as expected, Image.open(BytesIO(body)) as actual:
            result.scores[name] = psnr(expected, actual)
            if "A" in expected.mode + actual.mode:
                result.straight[name] = psnr(expected, actual, premultiply=False)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(score, *job) for job in jobs]:
            future.result()
    result.seconds = time.perf_counter() - started
    return result


def upload(base_url: str, corpus: list[photos.Photo], directory: Path) -> loadgen.Phase:
    requests = [
        loadgen.Request(
            "PUT",
            f"{base_url}/original/{photo.image_id}",
            (directory / photo.name).read_bytes(),
            photo.media_type,
            expect_status=201,
        )
        for photo in corpus
    ]
    return loadgen.run_counted("upload", requests, concurrency=2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", type=Path, default=photos.DEFAULT_DIRECTORY)
    parser.add_argument("--format", default="png", choices=("png", "jpg", "webp"))
    arguments = parser.parse_args()
    corpus = photos.ensure(arguments.corpus_dir)
    with tempfile.TemporaryDirectory(prefix="pymager-quality-") as temporary:
        server = servers.start_pymager(Path(temporary), list(SIZES), threads=0)
        try:
            uploaded = upload(server.base_url, corpus, arguments.corpus_dir)
            if uploaded.errors:
                print("\n".join(uploaded.errors[:5]))
                return 1
            result = run_quality(server.base_url, corpus, arguments.corpus_dir, arguments.format)
        finally:
            server.stop()
    print("\n".join(result.lines()))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
