"""
A corpus of real photographs, taken from Debian bookworm wallpaper packages.

    python bench/photos.py [--directory bench/photos]

The packages are fetched with `apt-get download` and unpacked with
`dpkg-deb -x` into the cache directory, so nothing is installed system-wide
and no root is needed (only an `apt-get update` done once on the machine).
The images keep their upstream bytes; a few WebP and PNG-with-alpha files are
made from them here, because no bookworm package ships large photographs in
those formats (see SOURCES and MADE).  manifest.json records every file's
SHA-256 and which package version it came from.

The corpus directory is flat on purpose: thumbor's file loader serves it as
is, so both servers read the very same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

DEFAULT_DIRECTORY = Path(__file__).parent / "photos"  # git-ignored
MANIFEST = "manifest.json"
CORPUS_VERSION = 1  # bump when SOURCES or MADE change, to force a rebuild


@dataclass(frozen=True)
class Source:
    package: str
    path: str  # inside the package
    image_id: str
    kind: str  # photograph, painting or render: say honestly what it is


# Every 8-20 MP JPEG photograph found in bookworm's wallpaper packages
# (gnome-backgrounds 43 ships only WebP renders, plasma-workspace-wallpapers
# and desktop-base only renders), plus two large non-photographic JPEGs to
# reach ten, and one large RGBA PNG.
L16, L20, B = "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "usr/share/backgrounds/"
SOURCES: tuple[Source, ...] = (
    Source(L16, B + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "picos", "photograph"),
    Source(L16, B + "Wine_by_Jakkub_Mede.jpg", "wine", "photograph"),
    Source(L16, B + "Bridge_by_Sander_Klootwijk.jpg", "bridge", "photograph"),
    Source(L16, B + "sunset_by_Aitzol_Berasategi.jpg", "sunset", "photograph"),
    Source(L16, B + "Dragonfly_by_Bolly.jpg", "dragonfly", "photograph"),
    Source(L16, B + "seeding_by_Clements_Engelhardt.jpg", "seeding", "photograph"),
    Source(L20, B + "Infinite-Sea_by_Aury88.jpg", "infinite_sea", "photograph"),
    Source(L20, B + "Kleiber_by_Lukas_Baubkus.jpg", "kleiber", "photograph"),
    Source("mate-backgrounds", B + "mate/abstract/Elephants_5640x3172.jpg", "elephants", "painting"),
    Source("ukui-wallpapers", B + "rhythm.jpg", "rhythm", "render"),
    Source("ukui-wallpapers", B + "goldfish.png", "goldfish", "render"),
)


@dataclass(frozen=True)
class Made:
    """A file converted here from one of SOURCES."""

    source_id: str
    image_id: str
    format: str  # "WEBP" or "PNG" (with a soft alpha vignette)
    width: int  # 0: keep the source's size


MADE: tuple[Made, ...] = (
    Made("sunset", "sunset_webp", "WEBP", 0),
    Made("dragonfly", "dragonfly_webp", "WEBP", 0),
    # 3000 px wide keeps a photographic RGBA PNG (about 15 MB) under
    # pymager-tx's default 32 MiB upload limit.
    Made("bridge", "bridge_alpha", "PNG", 3000),
    Made("seeding", "seeding_alpha", "PNG", 3000),
)
WEBP_QUALITY = 90

SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MEDIA_TYPE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True)
class Photo:
    image_id: str
    name: str  # file name in the corpus directory
    format: str  # Pillow's name: JPEG, PNG, WEBP
    mode: str
    width: int
    height: int
    bytes: int
    sha256: str
    kind: str
    origin: str  # "package=version:path", or "made from <id>: <how>"

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE[self.format]


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            f"`{' '.join(command)}` failed:\n{result.stderr.strip()}\n"
            "If apt-get cannot find the package, run `apt-get update` once (as root) and retry."
        )


def _unpacked(package: str, cache: Path) -> tuple[Path, str]:
    """The directory the package is unpacked in, and its version."""
    debs, root = cache / "debs", cache / "unpacked" / package
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        print(f"  apt-get download {package}", flush=True)
        _run(["apt-get", "download", package], debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)], cache)
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return root, version


def _alpha_vignette(size: tuple[int, int]) -> Image.Image:
    """Opaque centre fading to clear edges, plus one fully clear disc: real
    transparency of both kinds (soft and hard edges)."""
    alpha = ImageChops.invert(Image.radial_gradient("L").resize(size, Image.Resampling.BICUBIC))
    alpha = alpha.point(lambda value: min(255, value * 2))
    width, height = size
    draw = ImageDraw.Draw(alpha)
    draw.ellipse((width // 12, height // 12, width // 4, height // 4), fill=0)
    return alpha.filter(ImageFilter.GaussianBlur(2))


def _make(made: Made, source: Path, target: Path) -> str:
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    if made.width and image.width > made.width:
        height = round(image.height * made.width / image.width)
        image = image.resize((made.width, height), Image.Resampling.LANCZOS)
    if made.format == "WEBP":
        image.save(target, format="WEBP", quality=WEBP_QUALITY)
        return f"made from {made.source_id}: WebP quality {WEBP_QUALITY}, full size"
    rgba = image.convert("RGBA")
    rgba.putalpha(_alpha_vignette(image.size))
    rgba.save(target, format="PNG")
    return f"made from {made.source_id}: resized to {image.width}x{image.height} (LANCZOS), alpha vignette"


def _describe(path: Path, image_id: str, kind: str, origin: str) -> Photo:
    with Image.open(path) as image:
        assert image.format is not None
        fmt, mode, (width, height) = image.format, image.mode, image.size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Photo(image_id, path.name, fmt, mode, width, height, path.stat().st_size, digest, kind, origin)


def build(directory: Path) -> list[Photo]:
    cache = directory / ".cache"
    photos: list[Photo] = []
    paths: dict[str, Path] = {}
    for source in SOURCES:
        root, version = _unpacked(source.package, cache)
        original = root / source.path
        target = directory / f"{source.image_id}{original.suffix.lower()}"
        shutil.copyfile(original, target)  # upstream bytes, unchanged
        paths[source.image_id] = target
        origin = f"{source.package}={version}:/{source.path}"
        photos.append(_describe(target, source.image_id, source.kind, origin))
    kinds = {photo.image_id: photo.kind for photo in photos}
    for made in MADE:
        target = directory / f"{made.image_id}{SUFFIX[made.format]}"
        print(f"  making {target.name}", flush=True)
        origin = _make(made, paths[made.source_id], target)
        photos.append(_describe(target, made.image_id, kinds[made.source_id], origin))
    manifest = {"version": CORPUS_VERSION, "photos": [asdict(photo) for photo in photos]}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return photos


def load(directory: Path) -> list[Photo] | None:
    """The corpus if it is complete and unchanged (checked by SHA-256), else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != CORPUS_VERSION:
        return None
    photos = [Photo(**entry) for entry in manifest["photos"]]
    for photo in photos:
        path = directory / photo.name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != photo.sha256:
            return None
    return photos


def ensure(directory: Path = DEFAULT_DIRECTORY) -> list[Photo]:
    directory.mkdir(parents=True, exist_ok=True)
    photos = load(directory)
    if photos is None:
        print(f"Building the photo corpus in {directory} ...", flush=True)
        build(directory)
        photos = load(directory)
        assert photos is not None, "the corpus just built does not match its manifest"
    return photos


def digest(directory: Path = DEFAULT_DIRECTORY) -> str:
    return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY)
    arguments = parser.parse_args()
    for photo in ensure(arguments.directory):
        print(
            f"{photo.name:22} {photo.format:5} {photo.mode:5} {photo.width}x{photo.height} "
            f"{photo.megapixels:5.1f} MP {photo.bytes / 1e6:5.1f} MB  {photo.kind:10} {photo.origin}"
        )
    print(f"digest {digest(arguments.directory)}")


if __name__ == "__main__":
    main()
