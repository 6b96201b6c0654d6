"""
Signed derived URLs: GET /derived/<signature>/<name> asks for a size nobody
listed in [images] allowed_sizes, within the bounds a signed size keeps.

The signature is the unpadded base64url encoding of HMAC-SHA256 over the
UTF-8 bytes of the derived name ("<ID>-<W>x<H>[-<mode>].<ext>"), keyed with
the UTF-8 bytes of a URL signing key.  Pure standard library, so that the
client library (and any back end in Python) signs with this very code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymager_tx.core.errors import SizeOutOfBounds
from pymager_tx.core.model import Size

# 32 bytes of HMAC-SHA256, base64url without padding.
SIGNATURE_LENGTH = 43
# What a signing key must be, at least: shorter keys are guessable.
MIN_KEY_LENGTH = 16
# The largest side of a signed size (or of a side worked out from the aspect
# ratio) when [images] max_signed_side is not set: a 4K screen's width, and
# twice a 2048-wide retina srcset entry.
DEFAULT_MAX_SIGNED_SIDE = 4096


def signature(name: str, key: str) -> str:
    """The signature of a derived name under key."""
    digest = hmac.new(key.encode("utf-8"), name.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signed_path(name: str, key: str) -> str:
    """/derived/<signature>/<name>, signed with key."""
    return f"/derived/{signature(name, key)}/{name}"


def signer(key: str) -> Callable[[str], str]:
    """A function giving the signature of a name under key (the client's
    Signer)."""
    key.encode("utf-8")  # a key that is not text fails here, not at the first URL

    def sign(name: str) -> str:
        return signature(name, key)

    return sign


def verifies(name: str, given: str, keys: Iterable[str]) -> bool:
    """Whether given is the signature of name under any of keys.  Compared
    with every key, in constant time each, so that the time taken tells
    neither which key nor how much of the signature matched."""
    offered = given.encode("utf-8", "replace")
    matches = [hmac.compare_digest(offered, signature(name, key).encode("ascii")) for key in keys]
    return any(matches)


@dataclass(frozen=True)
class SignedSizeBounds:
    """What a signed size may be: each side at most max_side, at most
    max_pixels in all.  Sides worked out from the aspect ratio (a 0 in the
    name) are held to the same bounds, listed or signed."""

    max_side: int = DEFAULT_MAX_SIGNED_SIDE
    max_pixels: int = 64_000_000

    def check_named(self, size: Size) -> None:
        """Raise SizeOutOfBounds unless a signed size, as named, is within
        the bounds (a 0 side is checked once worked out: check_worked_out)."""
        if size.width == 0 and size.height == 0:
            raise SizeOutOfBounds(
                f"the size {size} has no side to keep the aspect ratio from; at most one is 0"
            )
        if max(size.width, size.height) > self.max_side:
            raise SizeOutOfBounds(
                f"the size {size} has a side over {self.max_side}, the most a signed size may have"
            )
        self._check_pixels(size, size)

    def check_worked_out(self, named: Size, size: Size) -> None:
        """Raise SizeOutOfBounds unless size, worked out from named (which
        has a 0 side) and a picture's aspect ratio, is within the bounds."""
        worked_out = size.height if named.height == 0 else size.width
        if worked_out > self.max_side:
            raise SizeOutOfBounds(
                f"the size {named} comes to {size} for this picture's aspect ratio, a side over "
                f"{self.max_side} ([images] max_signed_side)"
            )
        self._check_pixels(named, size)

    def _check_pixels(self, named: Size, size: Size) -> None:
        if size.width * size.height > self.max_pixels:
            came_to = "" if named == size else f" (here {size})"
            raise SizeOutOfBounds(
                f"the size {named}{came_to} has more pixels than {self.max_pixels} ([images] max_pixels)"
            )

    def holds(self, size: Size) -> bool:
        """Whether a signed URL may name size."""
        try:
            self.check_named(size)
        except SizeOutOfBounds:
            return False
        return True
