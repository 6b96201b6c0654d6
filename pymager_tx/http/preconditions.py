"""If-Match on writes (RFC 9110, section 13.1.1): which stored originals a
replacement may replace."""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.web.iweb import IRequest

# A strong entity tag; W/"..." is weak and never matches in If-Match, which
# compares strongly.  Anything else in the list is ignored: it names no
# representation the service ever sent.
_STRONG_TAG = re.compile(r'\s*"([\x21\x23-\x7e]*)"\s*')


@dataclass(frozen=True)
class IfMatch:
    """etags: the SHA-256s the client named (the opaque part of our strong
    ETags); None for `*`, any current original."""

    etags: tuple[str, ...] | None


def if_match(request: IRequest) -> IfMatch | None:
    """The request's If-Match (every field line, joined), None without one."""
    lines = request.requestHeaders.getRawHeaders(b"if-match")
    if not lines:
        return None
    value = ", ".join(line.decode("latin-1") for line in lines)
    if value.strip() == "*":
        return IfMatch(None)
    tags = []
    for item in value.split(","):
        match = _STRONG_TAG.fullmatch(item)
        if match is not None:
            tags.append(match.group(1))
    return IfMatch(tuple(tags))
