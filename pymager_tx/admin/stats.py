"""`pymager-admin stats`: what the store holds, from SQL aggregates alone
(no file is read): originals and renditions, bytes by format, the largest,
the oldest."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from pymager_tx.adapters.sql.admin_txn import AdminQueries, Biggest, StoreStats, TableStats
from pymager_tx.admin.command import Target, finish, with_target
from pymager_tx.admin.runtime import settled
from pymager_tx.process.wiring import Offloads, build_store


@click.command(short_help="Count originals and renditions, bytes by format, the largest, the oldest.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@with_target
def stats(target: Target, as_json: bool) -> None:
    """How many originals and renditions, bytes by format, the largest, the oldest."""
    target.require_database()
    store = build_store(target.settings, Offloads.at_once(), pool_size=1)
    try:
        found = settled(AdminQueries(store.database).stats())
    finally:
        store.database.engine.dispose()
    if as_json:
        click.echo(json.dumps(asdict(found), default=str, indent=2))
    else:
        for line in describe(found):
            click.echo(line)
    finish(0)


def describe(found: StoreStats) -> list[str]:
    lines = [*_table("originals", found.originals), *_table("renditions", found.renditions)]
    lines.append(f"unfinished uploads or deletions: {found.unfinished}")
    lines.append(f"derivations claimed: {found.claims}")
    return lines


def _table(name: str, table: TableStats) -> list[str]:
    lines = [f"{name}: {table.count}, {shown_size(table.bytes)}"]
    lines += [f"  {total.format}: {total.count}, {shown_size(total.bytes)}" for total in table.by_format]
    if table.largest is not None:
        lines.append(f"  largest: {_named(table.largest)}, {shown_size(table.largest.byte_length)}")
    if table.oldest is not None:
        lines.append(f"  oldest: {_named(table.oldest)}, {table.oldest.created_at.isoformat()}")
    return lines


def _named(found: Biggest) -> str:
    return found.image_id if found.variant is None else f"{found.image_id} {found.variant}"


def shown_size(count: int) -> str:
    amount = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            shown = f"{count} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
            return shown
        amount /= 1024
    raise AssertionError("unreachable")
