"""
The other processes sharing this service's database and storage.

A process knows its own name (written into the rows it holds: pending
uploads, derivation claims), can ask whether the holder of a row is alive,
and waits on a timer while a live peer finishes what it claimed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymager_tx.core.owner_names import new_owner_name
from pymager_tx.ports import IPeers

# How long a derivation claim holds without renewal: a process that dies
# mid-derivation delays that image by at most this much (less when its
# death is seen at once, on the same host).
CLAIM_LEASE = timedelta(seconds=30)
# Waiting for a peer's derivation: first look again after this many seconds,
# then each wait POLL_GROWTH times the last, up to POLL_MOST.  The growth
# bounds how late a waiter sees a finished derivation: a factor of 2 let it
# see a 20 MP photo's working copy, made in 0.72 s, at 1.12 s, and the cold
# phase's p99 follow (bench/RESULTS.md, stop 24); at 1.5 it sees it at
# 0.89 s, for three more looks (a claim's transaction each, all cheap).
POLL_FIRST = 0.02
POLL_GROWTH = 1.5
POLL_MOST = 0.25


@implementer(IPeers)
@dataclass(frozen=True)
class Peers:
    """Peer liveness from a function that tells whether a process runs."""

    me: str
    # Whether the process named is running; None names no process.
    alive: Callable[[str | None], Deferred[bool]]
    # For waiting on peers and renewing claims; None when there are none.
    timer: IReactorTime | None
    lease: timedelta = CLAIM_LEASE

    @classmethod
    def alone(cls) -> Peers:
        """This process only: every other holder is a dead predecessor."""
        me = new_owner_name()
        return cls(me, lambda owner: succeed(owner == me), None)
