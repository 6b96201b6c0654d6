"""
Value types of the domain: validated IDs, sizes, derived specs, and the records
the metadata store keeps about originals and derived images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from pymager_tx.core.errors import DerivedNameInvalid, InvalidFocalPoint, InvalidImageId
from pymager_tx.core.formats import ImageFormat
from pymager_tx.core.negotiation import AUTO_EXTENSION

ID_RULE = "an image ID is 1 to 128 characters, each a letter A-Z or a-z, a digit, '_' or '-'"
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A side of 0 keeps the original's aspect ratio (300x0: 300 wide); never
# both, and never a leading zero, so that each size has one name.
_SIDE = r"(?:0|[1-9][0-9]{0,4})"
_SIZE = re.compile(rf"({_SIDE})x({_SIDE})")
# Anchored at both ends; the ID may itself contain '-' and digits, so the size
# and extension are taken from the right.
_DERIVED_NAME = re.compile(
    r"(?P<image_id>[A-Za-z0-9_-]{1,128})-(?P<width>0|[1-9][0-9]{0,4})x(?P<height>0|[1-9][0-9]{0,4})"
    r"(?:-(?P<mode>fit|pad|smart))?\.(?P<extension>[A-Za-z0-9]{1,10})"
)


def _shown(value: object, limit: int = 140) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class ImageId:
    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not _ID.fullmatch(self.value):
            raise InvalidImageId(f"{ID_RULE}; got {_shown(self.value)}")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size:
        match = _SIZE.fullmatch(text)
        if match is None or text == "0x0":
            raise ValueError(
                "a size is written WxH with whole numbers, like 100x100, one of them 0 at most "
                f"(300x0: 300 wide, the height from the aspect ratio); got {text!r}"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def keeps_aspect(self) -> bool:
        """Whether a side is 0: taken from the picture's aspect ratio."""
        return self.width == 0 or self.height == 0

    def for_picture(self, width: int, height: int) -> Size:
        """This size with a 0 side worked out from a picture displayed
        width x height (at least 1 pixel); as it is without a 0 side."""
        if self.width == 0 and self.height != 0:
            return Size(max(1, round(self.height * width / height)), self.height)
        if self.height == 0 and self.width != 0:
            return Size(self.width, max(1, round(self.width * height / width)))
        return self

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class ResizeMode(StrEnum):
    """How an original is brought to WxH."""

    CROP = "crop"  # cover WxH, crop the overflow around the centre (the default)
    FIT = "fit"  # inside WxH, aspect ratio kept, nothing cropped: one side may be shorter
    PAD = "pad"  # fit, then pad to exactly WxH with the background colour
    # Crop, around the focal point when one is set, else around what the
    # picture's content draws the eye to (edges, saturation, skin tones).
    SMART = "smart"

    @property
    def focused(self) -> bool:
        """Whether the focal point moves the crop (so that renditions in
        this mode are made again when it changes)."""
        return self in (ResizeMode.CROP, ResizeMode.SMART)


@dataclass(frozen=True)
class FocalPoint:
    """Where the eye should fall, relative to the displayed picture (after
    its EXIF orientation): 0..1 from the left and from the top."""

    x: float
    y: float

    def __post_init__(self) -> None:
        for name, value in (("x", self.x), ("y", self.y)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise InvalidFocalPoint(
                    f"the focal point's {name} is a number from 0 to 1; got {_shown(value)}"
                )


@dataclass(frozen=True)
class DerivedName:
    """What a /derived/ URL asks for, before the format and size are checked."""

    image_id: ImageId
    size: Size
    extension: str
    mode: ResizeMode = ResizeMode.CROP


def parse_derived_name(name: str) -> DerivedName:
    match = _DERIVED_NAME.fullmatch(name)
    if match is None:
        raise DerivedNameInvalid(
            f"a derived image is named <ID>-<W>x<H>.<ext> or <ID>-<W>x<H>-fit.<ext> or "
            f"<ID>-<W>x<H>-pad.<ext> or <ID>-<W>x<H>-smart.<ext> (W or H 0: from the aspect ratio); "
            f"got {_shown(name)}"
        )
    return DerivedName(
        image_id=ImageId(match["image_id"]),
        size=Size(int(match["width"]), int(match["height"])),
        extension=match["extension"].lower(),
        mode=ResizeMode(match["mode"] or ResizeMode.CROP),
    )


@dataclass(frozen=True)
class DerivedSpec:
    size: Size
    output: ImageFormat
    mode: ResizeMode = ResizeMode.CROP
    # The format instead of output for a picture with transparency, chosen
    # from the pixels as it is derived: a negotiated rendition's fallback
    # (JPEG, else PNG; see core.negotiation).  None: output, always.
    alpha_output: ImageFormat | None = None
    # The size as named when a side of it was 0 (see for_picture): the
    # rendition keeps that name, so that 300x0 and 300x225 stay two.
    named_size: Size | None = None
    # The original's focal point, for the modes it moves (not in the variant:
    # renditions made before it changed are forgotten, see Recorded.STALE).
    focus: FocalPoint | None = None

    @property
    def variant(self) -> str:
        """Canonical name of this rendition of an original: jpg and jpeg are
        one, a crop (the default) has no suffix, as before modes existed,
        and a fallback whose format follows the pixels ends in ".auto"."""
        suffix = "" if self.mode is ResizeMode.CROP else f"-{self.mode}"
        ending = AUTO_EXTENSION if self.alpha_output is not None else self.output.name
        return f"{self.named_size or self.size}{suffix}.{ending}"

    def for_picture(self, width: int, height: int) -> DerivedSpec:
        """This spec with a 0 side of its size worked out from a picture
        displayed width x height, under the same variant."""
        if not self.size.keeps_aspect:
            return self
        return replace(self, size=self.size.for_picture(width, height), named_size=self.size)


class OriginalStatus(StrEnum):
    PENDING = "pending"  # claimed by an upload whose file is not yet stored
    READY = "ready"
    DELETING = "deleting"  # being removed; files may be partly gone


@dataclass(frozen=True, kw_only=True)
class StoredFile:
    """What the metadata says of a stored image file, original or derived."""

    image_id: str
    format: str
    media_type: str
    width: int
    height: int
    byte_length: int
    sha256: str
    blob_key: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class OriginalRecord(StoredFile):
    generation: str  # new for every upload, so a re-upload never meets old files
    status: OriginalStatus
    focal_x: float | None = None
    focal_y: float | None = None
    # Changes with every change of the focal point: renditions it moves are
    # recorded with the version they were made for, and only while current.
    focus_version: int = 0
    blurhash: str | None = None  # a placeholder (blurha.sh), computed at upload
    dominant_color: str | None = None  # "#rrggbb"

    @property
    def focal_point(self) -> FocalPoint | None:
        if self.focal_x is None or self.focal_y is None:
            return None
        return FocalPoint(self.focal_x, self.focal_y)


@dataclass(frozen=True, kw_only=True)
class DerivedRecord(StoredFile):
    variant: str
    # The original's focus_version it was made for, when its mode is focused.
    focus_version: int | None = None
