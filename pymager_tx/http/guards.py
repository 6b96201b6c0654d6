"""Bearer tokens for writes (POST, PUT, DELETE); reads never need one."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pymager_tx.core.errors import (
    Overloaded,
    PymagerError,
    RangeNotSatisfiable,
    Unauthorized,
    Unavailable,
    UploadTooLarge,
)


def challenge(error: Unauthorized) -> str:
    """The WWW-Authenticate value answering error (RFC 6750)."""
    value = 'Bearer realm="pymager"'
    return value + ', error="invalid_token"' if error.token_given else value


class WriteTokens:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode("utf-8") for token in tokens)

    def check(self, authorization: bytes | None) -> None:
        """Raise Unauthorized unless authorization is 'Bearer <a write token>'
        (or no tokens are configured, and writes are open)."""
        if not self._tokens:
            return
        scheme, _, token = (authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise Unauthorized("writes need an 'Authorization: Bearer <token>' header", token_given=False)
        given = token.strip()
        # Compare against every token, in constant time each.
        if not any([hmac.compare_digest(given, known) for known in self._tokens]):
            raise Unauthorized("the write token is not valid", token_given=True)


# A form around an upload of max_upload_bytes is a little larger.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadGate:
    """What a request body must pass before it is read: a write token, the
    size limit, and a free upload slot (at most max_uploads bodies are read
    at once).  The routes check the same tokens for writes without a body."""

    def __init__(self, tokens: WriteTokens, max_upload_bytes: int, max_uploads: int = 16) -> None:
        self.tokens = tokens
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + FORM_OVERHEAD_BYTES
        self.max_uploads = max_uploads
        self.uploads = 0

    def admit(self, authorization: bytes | None, length: int | None) -> None:
        """Take an upload slot for a body of length bytes (None: chunked),
        or raise the refusal: Unauthorized, UploadTooLarge, Overloaded."""
        self.tokens.check(authorization)
        if length is not None and length > self.max_body_bytes:
            raise UploadTooLarge(
                f"the request body is {length} bytes; uploads are limited to {self.max_upload_bytes}"
            )
        if self.uploads >= self.max_uploads:
            raise Overloaded(f"{self.max_uploads} uploads are already in progress; retry shortly")
        self.uploads += 1

    def check_received(self, received: int) -> None:
        """Raise UploadTooLarge once a body streams past the limit."""
        if received > self.max_body_bytes:
            raise UploadTooLarge(
                f"the request body is larger than the upload limit of {self.max_upload_bytes} bytes"
            )

    def release(self) -> None:
        """Give back the slot admit() took."""
        self.uploads -= 1


def refusal_headers(error: PymagerError) -> list[tuple[bytes, bytes]]:
    """The headers that go with a refusal: a challenge, a time to retry,
    the length a range missed."""
    if isinstance(error, Unauthorized):
        return [(b"WWW-Authenticate", challenge(error).encode("ascii"))]
    if isinstance(error, Unavailable):
        return [(b"Retry-After", b"%d" % error.retry_after)]
    if isinstance(error, RangeNotSatisfiable):
        return [(b"Content-Range", b"bytes */%d" % error.complete_length)]
    return []
