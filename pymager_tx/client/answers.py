"""
What the client makes of the service's answers: an image's headers as an
ImageInfo, a JSON body, a body read to the end and dropped, and the
conditional header a request sends.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet.defer import CancelledError
from twisted.web.client import ResponseFailed
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from pymager_tx.client.records import ImageInfo


def conditional(etag: str | None) -> dict[str, str]:
    return {} if etag is None else {"If-None-Match": etag}


def info(response: IResponse, url: str) -> ImageInfo:
    length = response.length if response.code != 304 and response.length is not UNKNOWN_LENGTH else None
    # HEAD answers announce their length as a header, and deliver nothing.
    return ImageInfo.from_headers(url, response.headers, length if length else None)


async def read_json(response: IResponse) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await treq.content(response))
    return document


async def discard(response: IResponse) -> None:
    try:
        await treq.collect(response, lambda _: None)
    except CancelledError:
        raise
    except ResponseFailed:
        pass  # an answer without a body to read (HEAD, 304, 204)


async def nothing() -> None:
    return None
