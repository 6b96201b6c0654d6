"""
The image inside an upload request body.

POST carries multipart/form-data with the image in a part named "file" (what
pymager clients have always sent); PUT carries the raw image.  Parsing is a
pure function of the Content-Type and the body, run off the reactor.
Werkzeug's sans-I/O decoder does the multipart parsing; it hands over each
part's raw bytes, so a "file" part without a filename is not mangled by text
decoding.

The body comes as a file (the site spools it to disk): a form is fed to the
decoder in slices read from it, so only the image part's bytes are ever held
in memory, and a raw body is read once.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import BinaryIO

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from pymager_tx.core.errors import BadUpload

FILE_FIELD = "file"
# Enough for any real form; a body of thousands of tiny parts is an attack.
_MAX_PARTS = 64
_SLICE = 64 * 1024
# RFC 2046 section 5.1.1: bchars, and no space at the end.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def image_from_form(content_type: str | None, body: BinaryIO) -> bytes:
    mimetype, options = parse_options_header(content_type or "")
    if mimetype.lower() != "multipart/form-data":
        raise BadUpload(
            f"POST takes multipart/form-data with the image in a part named {FILE_FIELD!r}; "
            f"got Content-Type {content_type or 'none'!r} (to send the raw image, use PUT)"
        )
    boundary = options.get("boundary")
    if not boundary:
        raise BadUpload("the multipart/form-data Content-Type has no boundary parameter")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadUpload("the multipart boundary is not 1 to 70 of the characters RFC 2046 allows")
    files = _parts_named(FILE_FIELD, boundary.encode("ascii"), body)
    if not files:
        raise BadUpload(f"the form has no part named {FILE_FIELD!r}")
    if len(files) > 1:
        raise BadUpload(f"the form has {len(files)} parts named {FILE_FIELD!r}; send exactly one")
    return files[0]


def image_from_body(content_type: str | None, body: BinaryIO) -> bytes:
    mimetype, _ = parse_options_header(content_type or "")
    mimetype = mimetype.lower()
    if mimetype and not (mimetype.startswith("image/") or mimetype == "application/octet-stream"):
        raise BadUpload(
            "PUT takes the raw image as the body, with Content-Type image/* or "
            f"application/octet-stream; got {content_type!r} (to send a form, use POST)"
        )
    return body.read()


def _parts_named(name: str, boundary: bytes, body: BinaryIO) -> list[bytes]:
    collector = _Collector(name)
    decoder = MultipartDecoder(boundary, max_parts=_MAX_PARTS)
    # Fed in slices: given a whole body at once, the decoder searches all of
    # it in one regular expression call that holds the GIL (and so stalls
    # the reactor) for as long as it takes; and only a slice is read at once.
    while piece := body.read(_SLICE):
        decoder.receive_data(piece)
        if collector.read(decoder):
            return collector.found
    decoder.receive_data(None)
    if collector.read(decoder):
        return collector.found
    raise BadUpload("the multipart body ends before its closing boundary")


class _Collector:
    """The raw bytes of every part with one name, from decoder events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.found: list[bytes] = []
        # Written as the part streams past: its bytes are held once.
        self._current: BytesIO | None = None

    def read(self, decoder: MultipartDecoder) -> bool:
        """Consume the events decoded so far; True once the form has ended."""
        while True:
            try:
                event = decoder.next_event()
            except Exception as error:
                # ValueError for malformed data, RequestEntityTooLarge past the
                # part limit: both are the client's malformed form.
                raise BadUpload(f"the multipart body is malformed ({error})") from None
            if isinstance(event, NeedData):
                return False
            if isinstance(event, Epilogue):
                return True
            if isinstance(event, File | Field):
                self._current = BytesIO() if event.name == self.name else None
            elif isinstance(event, Data) and self._current is not None:
                self._current.write(event.data)
                if not event.more_data:
                    self.found.append(self._current.getvalue())
                    self._current = None
