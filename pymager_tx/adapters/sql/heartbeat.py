"""
Peer liveness from the database, for processes that share no data directory:
each process renews a lease in its `processes` row (the heartbeat), and asks
the database whether another's lease still holds (LeaseLiveness).

What happens when the database is away: renewals fail and are logged; once
no renewal has committed for a whole lease, this process counts itself
fenced (Lease.lapsed): its health check fails (503, so a load balancer
sends work elsewhere), and the database refuses it new claims
(processes_txn.within_lease_txn) until a renewal commits again, since its
peers may by then take it for dead and finish its work.  Work it began
before is fenced by the conditions its writes already carry (a claim's
token, a pending row's status).  When the database answers again, the next
renewal finds the lease lapsed, joins again under the same name, and says
so in the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.lease import Lease
from pymager_tx.adapters.sql.processes_txn import (
    bury_lapsed_txn,
    join_txn,
    lease_left_txn,
    leave_txn,
    renew_lease_txn,
    sweep_turn_txn,
)


class Heartbeat:
    """This process's row in `processes`: joined at start, renewed every
    `every` seconds, removed at a clean stop."""

    log = Logger()

    def __init__(
        self, database: Database, lease: Lease, host: str, every: float, timer: IReactorTime
    ) -> None:
        assert lease.seconds > 2 * every, "a lease must outlast two heartbeats"
        self._database = database
        self.lease = lease
        self._host = host
        self._every = every
        self._timer = timer
        self._beating: LoopingCall | None = None
        self._renewing: Deferred[None] | None = None
        self._fenced = False  # said so in the log

    @property
    def _duration(self) -> timedelta:
        return timedelta(seconds=self.lease.seconds)

    async def join(self) -> None:
        """Bury the rows of processes whose lease lapsed, then register this
        one.  At start-up, before recovery: a live peer is then one whose
        lease holds."""
        buried = await self._database.transact(bury_lapsed_txn)
        if buried:
            self.log.info(
                "Forgot {count} processes whose lease lapsed: {names}",
                count=len(buried),
                names=", ".join(buried),
            )
        began = self.lease.now()
        await self._database.transact(join_txn, self.lease.owner, self._host, self._duration)
        self.lease.held(began)
        self.log.info(
            "Joined as {owner}, renewing a {lease:.0f}s lease every {every:.0f}s",
            owner=self.lease.owner,
            lease=self.lease.seconds,
            every=self._every,
        )

    def start(self) -> None:
        """Renew the lease every `every` seconds, from `every` seconds on."""
        self._beating = LoopingCall(self._beat)
        self._beating.clock = self._timer
        # Its Deferred fires when stop() stops it; renew() never fails.
        self._beating.start(self._every, now=False)

    def _beat(self) -> Deferred[None]:
        self._renewing = Deferred.fromCoroutine(self.renew())
        return self._renewing

    async def renew(self) -> None:
        """One renewal; failures are logged, never raised."""
        began = self.lease.now()
        try:
            held = await self._database.transact(
                renew_lease_txn, self.lease.owner, self._host, self._duration
            )
        except Exception as error:
            reason = getattr(error, "reason", None) or str(error)
            lapsed = self.lease.lapsed()
            if lapsed is not None and not self._fenced:
                self._fenced = True
                self.log.critical(
                    "Fenced: {lapsed}; peers may take this process for dead, so it claims no new "
                    "work and reports itself unhealthy until a renewal commits ({reason})",
                    lapsed=lapsed,
                    reason=reason,
                    owner=self.lease.owner,
                )
            else:
                self.log.warn(
                    "Cannot renew the lease of {owner}: {reason}", owner=self.lease.owner, reason=reason
                )
            return
        self.lease.held(began)
        if not held:
            self.log.critical(
                "The lease of {owner} had lapsed: peers may have taken this process for dead and "
                "finished its work (what it had begun is fenced); joined again",
                owner=self.lease.owner,
            )
        elif self._fenced:
            self.log.info("Lease of {owner} renewed: no longer fenced", owner=self.lease.owner)
        self._fenced = False

    def my_turn(self) -> Deferred[bool]:
        """Whether this process sweeps now (processes_txn.sweep_turn_txn):
        never while fenced, since its lease must hold."""
        return self._database.transact(sweep_turn_txn, self.lease.owner)

    async def leave(self) -> None:
        """Stop renewing and remove the row: peers see this process gone at
        once, not a lease later.  Failures are logged: the lease then lapses."""
        if self._beating is not None and self._beating.running:
            self._beating.stop()
        if self._renewing is not None and not self._renewing.called:
            # A renewal committing after the row is gone would join again.
            await self._renewing
        self.lease.released()
        try:
            await self._database.transact(leave_txn, self.lease.owner)
        except Exception as error:
            self.log.warn(
                "Cannot remove the row of {owner}; its lease will lapse: {reason}",
                owner=self.lease.owner,
                reason=getattr(error, "reason", None) or str(error),
            )


class LeaseLiveness:
    """Whether a process's lease holds, by the database's clock.

    A process found alive is taken for alive, without asking again, for at
    most `remember` seconds and never past the lease it had left when asked
    (counted on this machine's monotonic clock from before the question):
    a dead process is then seen dead exactly when its lease lapses, as
    without the memory, and one that left cleanly at most `remember` seconds
    late.  Dead answers are never remembered.
    """

    def __init__(
        self,
        database: Database,
        me: str,
        remember: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self.me = me
        self._remember = remember
        self._monotonic = monotonic
        self._alive_until: dict[str, float] = {}

    def alive(self, owner: str | None) -> Deferred[bool]:
        if owner is None:
            return succeed(False)
        if owner == self.me:
            return succeed(True)
        asked = self._monotonic()
        until = self._alive_until.get(owner)
        if until is not None and asked < until:
            return succeed(True)

        def answered(left: float | None) -> bool:
            if left is None:
                self._alive_until.pop(owner, None)
                return False
            self._forget_stale()
            self._alive_until[owner] = asked + min(left, self._remember)
            return True

        return self._database.read(lease_left_txn, owner).addCallback(answered)

    def _forget_stale(self) -> None:
        if len(self._alive_until) > 1024:
            now = self._monotonic()
            self._alive_until = {name: until for name, until in self._alive_until.items() if until > now}
