"""Bearer tokens for writes (POST, PUT, DELETE); reads never need one."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pymager_tx.core.errors import Unauthorized


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
