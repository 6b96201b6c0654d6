"""
Paths of the API, checked with the core's own rules before any request:
the ID rule (ImageId) and the derived-name grammar (parse_derived_name).
"""

from __future__ import annotations

from collections.abc import Callable

from pymager_tx.core.errors import DerivedNameInvalid, SizeOutOfBounds, UnsupportedOutputFormat
from pymager_tx.core.formats import OUTPUTS
from pymager_tx.core.model import DerivedName, ImageId, ResizeMode, Size, parse_derived_name

# Signs a derived name for the signed-URL scheme (GET /derived/<signature>/<name>):
# given the name, the signature.  pymager_tx.core.signing.signer(key) makes
# the one the service verifies (PymagerClient(signing_key=...) uses it).
Signer = Callable[[str], str]

EXTENSIONS = frozenset(extension for fmt in OUTPUTS for extension in fmt.extensions)


def original_path(image_id: str) -> str:
    """/original/<ID>; raises pymager_tx.core.errors.InvalidImageId."""
    return f"/original/{ImageId(image_id)}"


def derived_name(
    image_id: str, width: int, height: int, ext: str, mode: ResizeMode | str | None = None
) -> str:
    """<ID>-<W>x<H>[-fit|-pad].<ext>, checked by the grammar the service
    parses it with.  Raises the core's InvalidImageId, DerivedNameInvalid,
    or UnsupportedOutputFormat for an extension no format has (whether the
    service can write it, and whether the size is allowed, only it knows).
    A side of 0 keeps the aspect ratio; SizeOutOfBounds for 0x0."""
    ImageId(image_id)
    if width < 0 or height < 0:
        raise DerivedNameInvalid(f"a size has no negative side; got {width}x{height}")
    if width == 0 and height == 0:
        raise SizeOutOfBounds("the size 0x0 has no side to keep the aspect ratio from; at most one is 0")
    resize = ResizeMode(mode) if mode is not None else ResizeMode.CROP
    suffix = "" if resize is ResizeMode.CROP else f"-{resize}"
    name = f"{image_id}-{Size(width, height)}{suffix}.{ext}"
    parsed: DerivedName = parse_derived_name(name)
    if parsed.extension not in EXTENSIONS:
        known = ", ".join(sorted(EXTENSIONS))
        raise UnsupportedOutputFormat(f"no image format has the extension {ext!r}; known: {known}")
    return name


def derived_path(name: str, signer: Signer | None = None) -> str:
    """/derived/<name>, or /derived/<signature>/<name> when signed."""
    parse_derived_name(name)
    return f"/derived/{name}" if signer is None else f"/derived/{signer(name)}/{name}"
