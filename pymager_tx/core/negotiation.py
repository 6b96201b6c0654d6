"""
The format of a negotiated rendition (`<ID>-<W>x<H>[-<mode>].auto`), chosen
from the request's Accept header (RFC 9110, section 12.5.1).

AVIF and WebP are sent only to clients that name them: a wildcard (`*/*`,
`image/*`) says nothing about what a decoder really handles (curl and old
browsers send one), so it counts for the fallback alone.  The fallback is
JPEG, or PNG when the picture has transparency: which one is decided from
the pixels when the rendition is derived.  Among the formats a client
accepts, the highest q-value wins, and a tie goes to the smallest files:
AVIF, then WebP, then the fallback.  q=0 means "not acceptable".  When the
client accepts none of them (or sends no Accept), the fallback is sent all
the same, as RFC 9110 allows, rather than a 406 no browser could use.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from pymager_tx.core.formats import ImageFormat, format_named

AUTO_EXTENSION = "auto"
# The modern formats, best first: sent only to a client that names them.
_NAMED_ONLY = ("avif", "webp")
_FALLBACK = ("jpeg", "png")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
# Accept headers with more ranges than any browser sends are read this far.
_MAX_RANGES = 64


@dataclass(frozen=True)
class MediaRange:
    type: str
    subtype: str
    q: float

    def specificity(self, media_type: str) -> int | None:
        """How closely this range names media_type (2: exactly, 1: type/*,
        0: */*), None when it does not cover it."""
        kind, _, sub = media_type.partition("/")
        if self.type == kind and self.subtype == sub:
            return 2
        if self.type == kind and self.subtype == "*":
            return 1
        if self.type == "*" and self.subtype == "*":
            return 0
        return None


def parse_accept(header: str) -> list[MediaRange]:
    """The media ranges of an Accept header; malformed ones are left out."""
    ranges = []
    for item in header.split(",")[:_MAX_RANGES]:
        kind, *parameters = (part.strip() for part in item.split(";"))
        main, slash, sub = kind.lower().partition("/")
        if not slash or not main or not sub or (main == "*" and sub != "*"):
            continue
        q: float | None = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
                break  # what follows q are accept-extensions, not media type parameters
        if q is not None:
            ranges.append(MediaRange(main, sub, q))
    return ranges


def quality(ranges: list[MediaRange], media_type: str, wildcards: bool) -> float:
    """The q-value the ranges give media_type: that of the most specific
    range covering it (RFC 9110); 0 when none does.  Without wildcards,
    only a range naming media_type exactly counts."""
    best: tuple[int, float] | None = None
    for each in ranges:
        specificity = each.specificity(media_type)
        if specificity is None or (not wildcards and specificity < 2):
            continue
        if best is None or specificity > best[0]:
            best = (specificity, each.q)
    return 0.0 if best is None else best[1]


def negotiate(accept: str | None, writable: Collection[str]) -> tuple[ImageFormat, ImageFormat | None]:
    """The output of a negotiated rendition: (AVIF, None) or (WebP, None),
    else (JPEG, PNG), the fallback: JPEG, or PNG for a picture with
    transparency.  writable: the canonical names of the formats this
    process can encode."""
    ranges = parse_accept(accept or "")
    fallback_q = max(quality(ranges, format_named(name).media_type, wildcards=True) for name in _FALLBACK)
    best_name, best_q = "", fallback_q
    for name in reversed(_NAMED_ONLY):  # the better one wins a tie
        q = quality(ranges, format_named(name).media_type, wildcards=False)
        if name in writable and q > 0 and q >= best_q:
            best_name, best_q = name, q
    if best_name:
        return format_named(best_name), None
    return format_named(_FALLBACK[0]), format_named(_FALLBACK[1])
