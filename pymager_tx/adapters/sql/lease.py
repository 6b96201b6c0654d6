"""
This process's own lease, as its renewals know it: the local half of the
fence (the database's half is processes_txn.within_lease_txn).

A renewal that commits extends the lease to lease seconds from the moment
the database read its clock, which is after the renewal began here.  So
counting from when the last committed renewal began, on this machine's
monotonic clock, this process believes its lease lapsed no later than the
database judges it lapsed (clocks drift apart by far less than a lease in a
lease's time; they may be set anywhere, and jump, which a monotonic clock
ignores).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Lease:
    def __init__(self, owner: str, seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.owner = owner
        self.seconds = seconds
        self._monotonic = monotonic
        # When the last committed renewal (or the join) began; None until
        # the process joins, and again once it leaves.
        self._held_from: float | None = None

    def now(self) -> float:
        """The monotonic clock: take it when a renewal begins."""
        return self._monotonic()

    def held(self, since: float) -> None:
        """A join or renewal that began at since (now()) committed."""
        if self._held_from is None or since > self._held_from:
            self._held_from = since

    def released(self) -> None:
        self._held_from = None

    def lapsed(self) -> str | None:
        """Why this process may no longer count as alive to its peers; None
        while its lease holds."""
        if self._held_from is None:
            return f"{self.owner} holds no lease"
        silent = self._monotonic() - self._held_from
        if silent >= self.seconds:
            return f"the lease of {self.owner} lapsed: no renewal committed for {silent:.1f}s"
        return None
