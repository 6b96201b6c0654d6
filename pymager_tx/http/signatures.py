"""The check of signed derived URLs (GET /derived/<signature>/<name>): the
signature must verify under one of the URL signing keys, whatever the size;
what sizes a verified name may then ask for is the service's policy."""

from __future__ import annotations

from collections.abc import Iterable

from pymager_tx.core.errors import BadSignature
from pymager_tx.core.signing import SIGNATURE_LENGTH, verifies


class UrlSignatures:
    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(keys)

    def __repr__(self) -> str:
        # Never the keys, wherever this object is shown.
        return f"UrlSignatures({len(self._keys)} keys)"

    def check(self, signature: str, name: str) -> None:
        """Raise BadSignature unless signature signs name under a key.
        With no keys, every signed URL is refused: the service signs none."""
        if not self._keys:
            raise BadSignature(
                "this service has no URL signing keys, so no signed URL is valid here; "
                "ask for a listed size at /derived/<name>"
            )
        # A signature of the wrong length is compared all the same: the time
        # taken tells nothing, and the answer is the same.
        if not verifies(name, signature, self._keys):
            shape = (
                ""
                if len(signature) == SIGNATURE_LENGTH
                else f" (a signature is {SIGNATURE_LENGTH} characters)"
            )
            raise BadSignature(f"the signature does not match the name under any URL signing key{shape}")
