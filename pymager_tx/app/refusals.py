"""
Derivations recently refused, remembered for a while.

A derivation refused for its source (damaged data, too many pixels, past the
time budget) would be refused again: without a memory, every request for it
costs another decode, up to a whole time budget of an image thread, and a
few such URLs requested over and over keep the pool busy for everyone else.
So each process remembers a refusal for `seconds`, and answers the same
refusal at once meanwhile.  Keyed by upload generation, so a new upload under
the ID starts afresh.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from pymager_tx.core.errors import PymagerError


class RecentRefusals:
    def __init__(
        self,
        seconds: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._refused: OrderedDict[Hashable, tuple[float, PymagerError]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._refused)

    def remember(self, key: Hashable, error: PymagerError) -> None:
        if self.seconds <= 0:
            return
        self._refused.pop(key, None)
        self._refused[key] = (self._clock() + self.seconds, error)
        while len(self._refused) > self.max_entries:
            self._refused.popitem(last=False)

    def recall(self, key: Hashable) -> PymagerError | None:
        """A new error like the one remembered for key, if it is still recent."""
        entry = self._refused.get(key)
        if entry is None:
            return None
        until, error = entry
        if self._clock() >= until:
            del self._refused[key]
            return None
        return type(error)(*error.args)
