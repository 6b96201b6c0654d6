"""
Process leases, as whole transactions: liveness judged by the database.

Each process sharing the database holds a row in `processes` whose lease
(expires_at) it renews every few seconds (pymager_tx.adapters.sql.heartbeat).
A process whose lease ran out is dead to its peers, however its own clock
reads: every comparison here is with the database's clock (rows.database_now),
the one clock all processes share, so a process whose clock runs fast never
takes a live peer for dead, nor a slow one a dead peer for alive.

Each *_txn function takes a Connection already inside a transaction (see
Database.transact) and returns plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, delete, insert, select, update

from pymager_tx.adapters.sql.rows import database_now
from pymager_tx.adapters.sql.schema import processes
from pymager_tx.core.errors import DatabaseUnavailable

T = TypeVar("T")
P = ParamSpec("P")


class LeaseLapsed(DatabaseUnavailable):
    """This process's lease ran out (its renewals failed, or it stalled):
    its peers may take it for dead and finish its work, so it claims no new
    work until a renewal commits again."""


def join_txn(conn: Connection, name: str, host: str, lease: timedelta) -> None:
    """Register name with a lease from now; a row left under the name (a
    lease that lapsed) is replaced."""
    now = database_now(conn)
    conn.execute(delete(processes).where(processes.c.name == name))
    conn.execute(insert(processes).values(name=name, host=host, started_at=now, expires_at=now + lease))


def renew_lease_txn(conn: Connection, name: str, host: str, lease: timedelta) -> bool:
    """Extend name's lease to lease from now, if it still holds; if it ran
    out (or the row was buried), join again and return False: peers may
    have taken this process for dead meanwhile."""
    now = database_now(conn)
    renewed = conn.execute(
        update(processes)
        .where(processes.c.name == name, processes.c.expires_at > now)
        .values(expires_at=now + lease)
    )
    if renewed.rowcount == 1:
        return True
    join_txn(conn, name, host, lease)
    return False


def leave_txn(conn: Connection, name: str) -> None:
    """Remove name's row: a clean shutdown, seen as a death at once."""
    conn.execute(delete(processes).where(processes.c.name == name))


def bury_lapsed_txn(conn: Connection) -> list[str]:
    """Remove the rows of processes whose lease ran out; their names."""
    now = database_now(conn)
    lapsed = processes.c.expires_at <= now
    names = list(conn.execute(select(processes.c.name).where(lapsed)).scalars())
    conn.execute(delete(processes).where(lapsed, processes.c.name.in_(names)))
    return sorted(names)


def sweep_turn_txn(conn: Connection, name: str) -> bool:
    """Whether name sweeps now: its lease holds, and its name is the
    smallest of those whose lease holds (by the database's clock), so one
    live process sweeps at a time, whichever died.  The sweeper buries the
    rows whose lease lapsed, as a process joining does."""
    now = database_now(conn)
    first = conn.execute(
        select(processes.c.name).where(processes.c.expires_at > now).order_by(processes.c.name).limit(1)
    ).scalar()
    if first != name:
        return False
    bury_lapsed_txn(conn)
    return True


def lease_left_txn(conn: Connection, name: str) -> float | None:
    """Seconds left on name's lease by the database's clock; None if it has
    no lease (never joined, left, or lapsed)."""
    expires_at = conn.execute(select(processes.c.expires_at).where(processes.c.name == name)).scalar()
    if expires_at is None:
        return None
    left = (expires_at - database_now(conn)).total_seconds()
    return left if left > 0 else None


def within_lease_txn(
    conn: Connection,
    owner: str,
    work: Callable[Concatenate[Connection, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """work(conn, ...) in this transaction, if owner's lease holds now (by
    the database's clock); LeaseLapsed otherwise.  The fence on new work:
    a process its peers may already take for dead claims nothing."""
    if lease_left_txn(conn, owner) is None:
        raise LeaseLapsed(
            "this process is out of touch with its peers; try again later",
            f"{work.__name__}: the lease of {owner} has lapsed; no new work until it is renewed",
        )
    return work(conn, *args, **kwargs)
