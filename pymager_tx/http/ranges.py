"""
Range requests (RFC 9110, section 14) on stored images: one byte range at a
time, for video-like clients and resumable downloads.

- `bytes=a-b`, `bytes=a-` and `bytes=-n` answer 206 with Content-Range;
- a range that starts past the end (or `-0`) is 416, with
  `Content-Range: bytes */<length>`;
- several ranges are answered with the whole image (200), as RFC 9110
  allows: a multipart/byteranges body buys clients little here and costs a
  reader per part;
- a Range that does not parse, in another unit, or on any method but GET is
  ignored (200), as RFC 9110 requires;
- If-Range: the range applies only while the strong ETag (or the exact
  Last-Modified date) it names is current; else the whole image (200).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.web.iweb import IRequest
from werkzeug.http import parse_date

from pymager_tx.core.errors import RangeNotSatisfiable
from pymager_tx.http.answers import header_text

_RANGE = re.compile(r"\s*bytes\s*=\s*(?P<ranges>.*)", re.IGNORECASE | re.DOTALL)
# Positions of more digits than any file's length are ignored with the rest.
_SPEC = re.compile(r"(?P<first>[0-9]{0,30})\s*-\s*(?P<last>[0-9]{0,30})")


@dataclass(frozen=True)
class ByteRange:
    first: int
    last: int  # inclusive
    complete_length: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> bytes:
        return b"bytes %d-%d/%d" % (self.first, self.last, self.complete_length)


def requested_range(
    request: IRequest, complete_length: int, etag: str, modified: datetime
) -> ByteRange | None:
    """The one range of the image a GET asks for, None for the whole image;
    RangeNotSatisfiable when none of it can be sent."""
    header = header_text(request, b"range")
    if header is None or request.method != b"GET":
        return None
    if_range = header_text(request, b"if-range")
    if if_range is not None and not _current(if_range.strip(), etag, modified):
        return None
    return parse_range(header, complete_length)


def parse_range(header: str, complete_length: int) -> ByteRange | None:
    """The range a Range header asks for, or None to send the whole."""
    match = _RANGE.fullmatch(header)
    if match is None:
        return None  # another unit, or no unit: ignored
    specs = [spec.strip() for spec in match["ranges"].split(",") if spec.strip()]
    if len(specs) != 1:
        return None  # none, or several: the whole image
    spec = _SPEC.fullmatch(specs[0])
    if spec is None or (not spec["first"] and not spec["last"]):
        return None  # not a range (or positions longer than any file): ignored
    if not spec["first"]:
        return _suffix(int(spec["last"]), complete_length)
    first = int(spec["first"])
    last = int(spec["last"]) if spec["last"] else complete_length - 1
    if last < first and spec["last"]:
        return None  # invalid: ignored
    if first >= complete_length:
        raise _unsatisfiable(complete_length)
    return ByteRange(first, min(last, complete_length - 1), complete_length)


def _suffix(count: int, complete_length: int) -> ByteRange:
    """The last count bytes (all of them, when there are fewer)."""
    if count == 0 or complete_length == 0:
        raise _unsatisfiable(complete_length)
    return ByteRange(max(0, complete_length - count), complete_length - 1, complete_length)


def _unsatisfiable(complete_length: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the range asked for starts past the end of the image, which has {complete_length} bytes",
        complete_length,
    )


def _current(if_range: str, etag: str, modified: datetime) -> bool:
    """Whether If-Range's validator names the image as it is: a strong
    ETag equal to ours, or exactly its Last-Modified date (a weak ETag, or
    anything else, never matches)."""
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    try:
        date = parse_date(if_range)
    except (OverflowError, ValueError):
        return False
    if date is None:
        return False
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return date == modified.replace(microsecond=0)
