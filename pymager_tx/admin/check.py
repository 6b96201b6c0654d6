"""
`pymager-admin check [--repair]`: compare the database with the stored files.

Runs beside live processes: it asks each row's owner whether it is alive
(pymager_tx.adapters.cluster.owners), and leaves what the living hold.  Exit status: 0 when
consistent (after repairing, with --repair), 1 when inconsistencies remain.
"""

from __future__ import annotations

import click
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from pymager_tx.adapters.sql.schema_version import State, status_txn
from pymager_tx.admin.command import AdminError, Target, finish, with_target
from pymager_tx.app.consistency import check_store
from pymager_tx.ports import immediate
from pymager_tx.process.wiring import Offloads, build_service, build_store, describe_blobs


@click.command(short_help="Compare the database with the stored files; --repair fixes them.")
@click.option("--repair", is_flag=True, help="Fix what the check finds.")
@with_target
def check(target: Target, repair: bool) -> None:
    """Report orphan files, missing files and unfinished work; --repair fixes them.

    Exits with 0 when the store is consistent (after repairing, with
    --repair), 1 when inconsistencies remain."""
    finish(_check(target, repair))


def _check(target: Target, repairing: bool) -> int:
    schema = target.transact(status_txn)
    if schema.state is not State.CURRENT:
        raise AdminError(f"{target.shown_url}: {schema.describe()}; run `pymager-admin db upgrade` first")
    store = build_store(target.settings, Offloads.at_once(), pool_size=1)
    database, blobs, peers = store.database, store.blobs, store.peers
    # Removals made by --repair must void what live processes hold in memory.
    epoch = store.epoch
    if repairing:
        epoch.open()
    try:
        service = build_service(target.settings, store, immediate, memory_cache=False)
        # What repair does (removes, forgets, finishes) is told as it is done.
        actions: list[str] = []
        observer = _ActionLog(actions)
        globalLogPublisher.addObserver(observer)
        try:
            found, after = check_store(database, blobs, service, peers, repairing=repairing)
        finally:
            globalLogPublisher.removeObserver(observer)
    finally:
        database.engine.dispose()
        epoch.close()
    for line in found.lines():
        click.echo(line)
    for action in actions:
        click.echo(f"repair: {action}")
    if found.consistent:
        click.echo(f"{target.shown_url} and {describe_blobs(target.settings)}: consistent")
        return 0
    if after is None:
        click.echo(f"{len(found.lines())} inconsistencies; `pymager-admin check --repair` fixes them")
        return 1
    for line in after.lines():
        click.echo(f"still: {line}")
    click.echo("repaired" if after.consistent else f"{len(after.lines())} inconsistencies remain")
    return 0 if after.consistent else 1


_TOLD = {LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical}


@implementer(ILogObserver)
class _ActionLog:
    def __init__(self, actions: list[str]) -> None:
        self._actions = actions

    def __call__(self, event: LogEvent) -> None:
        namespace = str(event.get("log_namespace", ""))
        if event.get("log_level") in _TOLD and namespace.startswith("pymager_tx"):
            self._actions.append(formatEvent(event))
