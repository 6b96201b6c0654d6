"""GET /originals: its query (a keyset cursor and a page size) and its
document."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from pymager_tx.core.errors import InvalidListingRequest
from pymager_tx.core.model import ImageId, OriginalRecord

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def listing_query(request: IRequest) -> tuple[ImageId | None, int]:
    """The cursor (the last ID of the previous page) and the page size."""
    args: dict[bytes, list[bytes]] = request.args or {}
    after = _one(args, b"after")
    limit_text = _one(args, b"limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not re.fullmatch(r"[0-9]{1,6}", limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise InvalidListingRequest(
                f"limit is a whole number from 1 to {MAX_LIMIT}; got {limit_text[:20]!r}"
            )
        limit = int(limit_text)
    return (None if after is None else ImageId(after)), limit


def _one(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidListingRequest(f"{name.decode()} is given at most once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidListingRequest(f"{name.decode()} is not UTF-8") from None


def listing_document(
    records: list[OriginalRecord],
    more: bool,
    limit: int,
    absolute_url: Callable[[str], str],
    describe: Callable[[OriginalRecord, str], dict[str, object]],
) -> dict[str, object]:
    """The page: each original as an upload describes it, and the URL of the
    next page (null on the last)."""
    items = [describe(record, absolute_url(f"/original/{record.image_id}")) for record in records]
    following = None
    if more and records:
        following = absolute_url("/originals?" + urlencode({"after": records[-1].image_id, "limit": limit}))
    return {"items": items, "next": following}
