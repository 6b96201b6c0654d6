"""
`pymager-admin`: an operator's commands on the database and data directory
that `twistd pymager` serves, configured the same way (--config, --data-dir)
plus --database-url.

The commands are click commands on one group (`cli`); each module of this
package adds its own (db, check, import, warm, prune, stats, sign, migrate-storage).  A command
raises AdminError (or a configuration, database or storage error) to fail:
the group prints one line to stderr and exits with 1.  Usage errors exit
with 2, as click's do.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pymager_tx import __version__
from pymager_tx.adapters.sql.schema_version import SchemaError, State, status_txn, upgrade_txn
from pymager_tx.admin.check import check
from pymager_tx.admin.command import AdminError, Target, finish, with_target
from pymager_tx.admin.imports import import_command
from pymager_tx.admin.migrate import migrate_storage
from pymager_tx.admin.prune import prune
from pymager_tx.admin.sign import sign
from pymager_tx.admin.stats import stats
from pymager_tx.admin.warm import warm
from pymager_tx.core.errors import ConfigError, Unavailable

PROG = "pymager-admin"


class AdminGroup(click.Group):
    """Turns the failures a command may meet into one line and status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:  # one problem a line: make them one line
            message = " ".join(str(error).split())
        except (AdminError, SchemaError, OSError) as error:
            message = str(error)
        except Unavailable as error:
            message = f"{error.detail} ({error.reason})"
        except SQLAlchemyError as error:
            cause = error.orig if isinstance(error, DBAPIError) else error
            target: Target | None = ctx.meta.get("pymager.target")
            where = target.shown_url if target is not None else "the database"
            message = f"{where}: {_first_line(str(cause))}"
        click.echo(f"{PROG}: {message}", err=True)
        ctx.exit(1)


@click.group(cls=AdminGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="pymager-tx", message="%(prog)s %(version)s")
def cli() -> None:
    """Administer the database and stored images of a pymager-tx service.

    Every command takes the service's own --config FILE (and --data-dir,
    --database-url), so that it works on what `twistd pymager` serves."""


@cli.group(short_help="The database schema: its revision, and upgrades.")
def db() -> None:
    """The database schema: its revision, and upgrades."""


@db.command(short_help="Bring the schema to this release's revision (creating it if empty).")
@with_target
def upgrade(target: Target) -> None:
    """Bring the database schema to this pymager-tx's revision (creating it if empty)."""
    before, after = target.transact(upgrade_txn, create=True)
    if before.state is State.EMPTY:
        click.echo(f"{target.shown_url}: schema created at revision {after.revision}")
    elif before.revision == after.revision:
        click.echo(f"{target.shown_url}: already at revision {after.revision}, the current one")
    else:
        click.echo(f"{target.shown_url}: upgraded from revision {before.revision} to {after.revision}")
    finish(0)


@db.command()
@with_target
def current(target: Target) -> None:
    """Tell the database schema's revision."""
    click.echo(f"{target.shown_url}: {target.transact(status_txn).describe()}")
    finish(0)


for command in (check, import_command, warm, prune, stats, sign, migrate_storage):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run pymager-admin with argv (default: the command line); the exit
    status.  A usage error raises SystemExit(2), as click does."""
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False
        )
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return status if isinstance(status, int) else 0


def _first_line(message: str) -> str:
    # Drivers add hints on further lines; the first line says what failed.
    return next((line.strip() for line in message.splitlines() if line.strip()), message)


if __name__ == "__main__":
    sys.exit(main())
