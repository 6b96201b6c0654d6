"""
A deterministic corpus of test photographs, made with Pillow alone.

    PYTHONPATH=. python bench/corpus.py            # writes bench/corpus/ if missing
    PYTHONPATH=. python bench/corpus.py --force    # rebuilds it

Eight 4000x3000 JPEGs (quality 90) and two 2000x2000 PNGs with an alpha
channel.  Each image is a smooth colour field, soft shapes, blotchy
mid-frequency texture and fine grain, so it compresses roughly as a photograph
does (a few MB per 12 MP JPEG) instead of as a flat test card.

Every random choice comes from random.Random(seed), so a rebuild with the same
Pillow (and libjpeg/zlib) writes the same bytes; manifest.json records their
SHA-256 so a run can say which corpus it measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

CORPUS_DIRECTORY = Path(__file__).parent / "corpus"
MANIFEST = "manifest.json"
SEED = 20261121

JPEG_COUNT = 8
JPEG_SIZE = (4000, 3000)
JPEG_QUALITY = 90
PNG_COUNT = 2
PNG_SIZE = (2000, 2000)

# Grain amplitude (+/- levels) and the cell size of the blotchy texture.
GRAIN = 7
TEXTURE_CELL = 12


@dataclass(frozen=True)
class CorpusImage:
    image_id: str
    path: Path
    media_type: str
    width: int
    height: int


def _random_colour(rng: random.Random, alpha: int | None = None) -> tuple[int, ...]:
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return colour if alpha is None else (*colour, alpha)


def _noise(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Uniform noise, one byte a pixel, from the seeded generator."""
    width, height = size
    return Image.frombytes("L", size, rng.randbytes(width * height))


def _smooth_field(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """An RGB field of three gradients, each turned and stretched its own way."""
    channels = []
    for _ in range(3):
        gradient = Image.radial_gradient("L") if rng.random() < 0.5 else Image.linear_gradient("L")
        gradient = gradient.rotate(rng.uniform(0, 360), resample=Image.Resampling.BICUBIC, expand=False)
        # Crop a random window so the field is not centred the same way each time.
        left, top = rng.randrange(0, 64), rng.randrange(0, 64)
        window = gradient.crop((left, top, left + 160, top + 160))
        channels.append(window.resize(size, Image.Resampling.BICUBIC))
    return Image.merge("RGB", channels)


def _shapes(rng: random.Random, image: Image.Image, count: int) -> None:
    """Ellipses, rectangles and polygons, drawn in place."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = x0 + rng.randrange(width // 20, width // 3)
        y1 = y0 + rng.randrange(height // 20, height // 3)
        kind = rng.randrange(3)
        colour = _random_colour(rng, 255 if image.mode == "RGBA" else None)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [(rng.randrange(x0, x1), rng.randrange(y0, y1)) for _ in range(5)]
            draw.polygon(points, fill=colour)


def _texture(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Blotchy mid-frequency luminance: coarse noise scaled up smoothly."""
    width, height = size
    coarse = _noise(rng, (width // TEXTURE_CELL, height // TEXTURE_CELL))
    return coarse.resize(size, Image.Resampling.BICUBIC)


def _grain(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Fine noise in 0..2*GRAIN, to add with an offset of -GRAIN."""
    return _noise(rng, size).point(lambda value: value * (2 * GRAIN + 1) // 256)


def _photograph(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = _smooth_field(rng, size)
    _shapes(rng, image, count=rng.randrange(12, 24))
    image = image.filter(ImageFilter.GaussianBlur(radius=3))
    texture = _texture(rng, size).convert("RGB")
    # Mostly the scene, a little of the texture: soft, uneven surfaces.
    image = Image.blend(image, texture, alpha=0.18)
    grain = _grain(rng, size).convert("RGB")
    return ImageChops.add(image, grain, scale=1.0, offset=-GRAIN)


def _with_alpha(rng: random.Random, image: Image.Image) -> Image.Image:
    """An alpha channel of a soft radial vignette and a few opaque or clear shapes."""
    alpha = Image.radial_gradient("L").resize(image.size, Image.Resampling.BICUBIC)
    alpha = ImageChops.invert(alpha)
    draw = ImageDraw.Draw(alpha)
    width, height = image.size
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(100, 600), y0 + rng.randrange(100, 600))
        draw.ellipse(box, fill=rng.choice((0, 255)))
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(directory: Path = CORPUS_DIRECTORY, seed: int = SEED) -> list[CorpusImage]:
    """Write the corpus into directory, replacing what is there."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images: list[CorpusImage] = []
    for number in range(JPEG_COUNT):
        image_id = f"photo{number:02d}"
        path = directory / f"{image_id}.jpg"
        _photograph(rng, JPEG_SIZE).save(path, format="JPEG", quality=JPEG_QUALITY)
        images.append(CorpusImage(image_id, path, "image/jpeg", *JPEG_SIZE))
        print(f"  {path.name}: {path.stat().st_size / 1e6:.2f} MB", flush=True)
    for number in range(PNG_COUNT):
        image_id = f"alpha{number:02d}"
        path = directory / f"{image_id}.png"
        _with_alpha(rng, _photograph(rng, PNG_SIZE)).save(path, format="PNG")
        images.append(CorpusImage(image_id, path, "image/png", *PNG_SIZE))
        print(f"  {path.name}: {path.stat().st_size / 1e6:.2f} MB", flush=True)
    manifest = {
        "seed": seed,
        "pillow": version("pillow"),
        "files": {image.path.name: _sha256(image.path) for image in images},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return images


def load(directory: Path = CORPUS_DIRECTORY) -> list[CorpusImage] | None:
    """The corpus in directory if it is complete and unchanged, else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files: dict[str, str] = manifest.get("files", {})
    images: list[CorpusImage] = []
    for name, digest in files.items():  # in the order built: the JPEGs first
        path = directory / name
        if not path.is_file() or _sha256(path) != digest:
            return None
        with Image.open(path) as opened:
            media_type = "image/png" if opened.format == "PNG" else "image/jpeg"
            images.append(CorpusImage(path.stem, path, media_type, *opened.size))
    if len(images) != JPEG_COUNT + PNG_COUNT:
        return None
    return images


def corpus_digest(directory: Path = CORPUS_DIRECTORY) -> str:
    """A short digest of the whole corpus, for the results."""
    manifest = (directory / MANIFEST).read_bytes()
    return hashlib.sha256(manifest).hexdigest()[:16]


def ensure(directory: Path = CORPUS_DIRECTORY) -> list[CorpusImage]:
    """The corpus, built first if it is missing or damaged."""
    images = load(directory)
    if images is None:
        print(f"Building the corpus in {directory} ...", flush=True)
        build(directory)
        images = load(directory)
        assert images is not None, "the corpus just built does not match its manifest"
    return images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the corpus is complete")
    parser.add_argument("--directory", type=Path, default=CORPUS_DIRECTORY)
    arguments = parser.parse_args()
    if arguments.force:
        build(arguments.directory)
    images = ensure(arguments.directory)
    total = sum(image.path.stat().st_size for image in images)
    print(f"{len(images)} images, {total / 1e6:.1f} MB, digest {corpus_digest(arguments.directory)}")


if __name__ == "__main__":
    main()
