"""What the use cases pass between them: the policy, the stored image as
served, a derivation's errand, and the errors they raise by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from pymager_tx.app.admission import Ticket
from pymager_tx.app.api import StoredImage
from pymager_tx.core.errors import ImageIdTaken, ImageNotFound
from pymager_tx.core.keys import derived_key, original_key
from pymager_tx.core.model import DerivedSpec, ImageId, Size
from pymager_tx.core.records import Claim
from pymager_tx.core.signing import DEFAULT_MAX_SIGNED_SIDE, SignedSizeBounds
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions

# Seconds a derivation may take when the policy sets no time budget.
DEFAULT_BUDGET = 20.0

Rendition = tuple[str, str, str]  # image ID, generation, variant


@dataclass(frozen=True)
class ImagePolicy:
    allowed_sizes: frozenset[Size]
    max_upload_bytes: int
    limits: DecodeLimits
    encoding: EncodeOptions
    # The largest side of a signed size, and of a side worked out from the
    # aspect ratio (a 0 in the name).
    max_signed_side: int = DEFAULT_MAX_SIGNED_SIDE
    # Send a rendition as soon as it is rendered, while it is stored and
    # recorded (see Errand.may_take_answer).  Off behind X-Accel-Redirect, whose
    # answer names the stored file, which must then exist.
    answer_before_stored: bool = True

    @property
    def signed_bounds(self) -> SignedSizeBounds:
        return SignedSizeBounds(self.max_signed_side, self.limits.max_pixels)

    def deadline(self, arrived: float | None) -> float | None:
        """When work for a request that arrived then (time.monotonic()) must
        be done: the time budget counts from the arrival."""
        budget = self.limits.time_budget
        return None if arrived is None or budget is None else arrived + budget

    @property
    def hold_limit(self) -> float:
        """Seconds a holder renews a claim, and a waiter waits for one: twice
        the time a derivation may take, for its reads and writes."""
        return 2 * (self.limits.time_budget or DEFAULT_BUDGET)


@dataclass(frozen=True)
class WorkingCopy:
    """The reduced copy of a large original that later sizes are derived
    from, so that each original is decoded in full once, not once per size.
    Stored and claimed like any rendition, under a variant no URL names."""

    sizes: frozenset[Size]
    variant: str = "working"


Target = DerivedSpec | WorkingCopy


class Errand:
    """What one request's derivation carries down to its image work: when it
    must be done by, how it hears that nobody waits for it any more, and
    whether it may be answered before the rendition is recorded."""

    def __init__(
        self,
        deadline: float | None,
        deserted: Callable[[Rendition], Deferred[None]] | None = None,
        ticket: Ticket | None = None,
        unchanged: Callable[[], bool] | None = None,
        keep: Callable[[StoredImage], object] | None = None,
    ) -> None:
        """ticket: the place in the image queue of the derivation this
        errand is part of (see pymager_tx.app.admission); unchanged():
        whether no deletion, replacement or refocusing can have begun since
        the request looked its original up (as the memory cache judges it);
        None: never answered before the record; keep(stored): what the
        request would have done with the rendition had it waited for the
        record (remember it), done once it is recorded after an early answer."""
        self.deadline = deadline
        self._deserted = deserted
        self.deserted_now: Deferred[None] | None = None
        self.ticket = ticket
        self._unchanged = unchanged
        self._keep = keep

    def of(self, key: Rendition, ticket: Ticket | None = None) -> Errand:
        """The errand of the shared work running under key, holding ticket."""
        errand = Errand(self.deadline, self._deserted, ticket, self._unchanged, self._keep)
        errand.deserted_now = None if self._deserted is None else self._deserted(key)
        return errand

    def may_take_answer(self) -> bool:
        """Whether this request may be sent a rendition before it is
        recorded: only while its original is still current by the rule that
        lets the memory cache serve a rendition without asking the database."""
        return self._unchanged is not None and self._unchanged()

    def recorded(self, stored: StoredImage) -> None:
        """The rendition answered early is now recorded as stored describes."""
        if self._keep is not None:
            self._keep(stored)


# The variant, which no URL names, of the claim a replacement of an original
# holds (see pymager_tx.app.replacements): it names the new upload's file
# until the swap, and the old upload's from then until its files are gone.
REPLACEMENT = "replacement"


def claimed_key(claim: Claim) -> str:
    """The file the holder of claim writes (see storage.keys.derived_key),
    or for a replacement, the original file of the generation it names."""
    if claim.variant == REPLACEMENT:
        return original_key(ImageId(claim.image_id), claim.generation)
    return derived_key(ImageId(claim.image_id), claim.generation, claim.variant, claim.token)


def not_found(image_id: ImageId) -> ImageNotFound:
    return ImageNotFound(f"no image is stored under the ID {image_id.value!r}")


def taken(image_id: ImageId) -> ImageIdTaken:
    return ImageIdTaken(f"an image is already stored under the ID {image_id.value!r}")
