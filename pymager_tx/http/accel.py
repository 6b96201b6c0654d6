"""
X-Accel-Redirect answers: nginx sends the stored file itself.

When pymager-tx runs behind nginx on the same machine as its filesystem
store, a GET that would send an image's bytes answers its headers only,
with `X-Accel-Redirect: <prefix><blob key>`; nginx then serves that path
from an `internal` location aliased to the files directory (etc/nginx.conf).
The service still decides everything else: the lookup, 304s, HEADs, every
refusal.  Ranges are nginx's to answer, from the client's own header.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.web.iweb import IRequest

from pymager_tx.core.model import StoredFile


class AccelRedirect:
    def __init__(self, prefix: str) -> None:
        """prefix: the internal location's path, e.g. "/_pymager_files/"
        (checked by the settings)."""
        self._prefix = prefix

    def answer(self, request: IRequest, record: StoredFile) -> bytes:
        """No body: nginx sends the file named by the header."""
        request.setHeader(b"Content-Type", record.media_type.encode("ascii"))
        request.setHeader(b"X-Accel-Redirect", self.location(record).encode("ascii"))
        return b""

    def location(self, record: StoredFile) -> str:
        # Keys are validated on the way in (core.keys); quoted all the same,
        # since nginx decodes the URI before it maps it to a file.
        return self._prefix + quote(record.blob_key, safe="/")
