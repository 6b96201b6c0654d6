"""What of the format table (pymager_tx.core.formats) the Pillow installed in
this process can decode and encode."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from io import BytesIO

from PIL import Image, features

from pymager_tx.core.formats import DEFAULT_DECODERS, FEATURE_FOR, KNOWN, ImageFormat


def _pillow_has(pillow_name: str, registry: Mapping[str, object]) -> bool:
    Image.init()
    feature = FEATURE_FOR.get(pillow_name)
    if feature is not None and not features.check(feature):
        return False
    return pillow_name in registry


@cache
def writable_extensions() -> dict[str, ImageFormat]:
    """Lowercase URL extension -> format, for every format this Pillow can encode."""
    return {
        extension: fmt
        for fmt in KNOWN
        if fmt.output and _pillow_has(fmt.pillow_name, Image.SAVE)
        for extension in fmt.extensions
    }


def writable_names() -> frozenset[str]:
    """Canonical names of the formats this Pillow can encode."""
    return frozenset(fmt.name for fmt in writable_extensions().values())


def output_format_for(extension: str) -> ImageFormat | None:
    return writable_extensions().get(extension.lower())


@cache
def decodable_formats() -> tuple[str, ...]:
    """Pillow names of the known formats this Pillow can decode (HEIF through
    pillow-heif, which pymager_tx.imaging registers)."""
    names = dict.fromkeys(fmt.pillow_name for fmt in KNOWN)
    return tuple(name for name in names if _pillow_has(name, Image.OPEN))


def default_decoders() -> tuple[str, ...]:
    available = decodable_formats()
    return tuple(name for name in DEFAULT_DECODERS if name in available)


def unknown_decoders(names: Iterable[str]) -> list[str]:
    available = decodable_formats()
    return [name for name in names if name not in available]


def prepare_codecs() -> None:
    """Load every codec this process may use now, at start-up: Pillow
    imports its plugins and sets up each library (libwebp, libavif, ...) on
    first use, holding the GIL for tens of milliseconds (a first WebP took
    27 ms), and a first derivation under load would stall the reactor's
    thread meanwhile.  Blocking: run it off the reactor."""
    Image.init()
    sample = Image.new("RGB", (8, 8), (128, 64, 32))
    for fmt in writable_extensions().values():
        written = BytesIO()
        sample.save(written, format=fmt.pillow_name)
        written.seek(0)
        with Image.open(written) as decoded:
            decoded.load()
