"""Validators of stored images and conditional GET (RFC 9110 section 13)."""

from __future__ import annotations

from datetime import datetime

from twisted.web.iweb import IRequest
from werkzeug.http import http_date, parse_date
from werkzeug.sansio.http import is_resource_modified

from pymager_tx.http.answers import header_text


def strong_etag(sha256: str) -> str:
    return f'"{sha256}"'


def set_validators(request: IRequest, etag: str, last_modified: datetime, cache_control: str) -> None:
    request.setHeader(b"ETag", etag.encode("ascii"))
    request.setHeader(b"Last-Modified", http_date(last_modified).encode("ascii"))
    if cache_control:
        request.setHeader(b"Cache-Control", cache_control.encode("ascii"))


def not_modified(request: IRequest, etag: str, last_modified: datetime) -> bool:
    """True when the client's copy is current: If-None-Match matches (it takes
    precedence), or, without it, If-Modified-Since is not older than the
    image.  Dates compare to the second, as HTTP dates have no more."""
    return not is_resource_modified(
        http_if_none_match=header_text(request, b"if-none-match"),
        http_if_modified_since=_valid_date(header_text(request, b"if-modified-since")),
        etag=etag,
        last_modified=last_modified,
    )


def _valid_date(value: str | None) -> str | None:
    """The header if it is a date HTTP can mean; a recipient ignores an
    If-Modified-Since it cannot parse (RFC 9110, section 13.1.3)."""
    try:
        return value if value is not None and parse_date(value) is not None else None
    except (OverflowError, ValueError):
        return None
