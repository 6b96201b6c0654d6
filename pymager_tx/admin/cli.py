"""
`pymager-admin`: an operator's commands on the database and data directory
that `twistd pymager` serves, configured the same way (--config, --data-dir)
plus --database-url.

Every subcommand is a Command in the list commands() returns; its words give
its place (("db", "upgrade") is `pymager-admin db upgrade`).  A module with
more subcommands defines its own list of Command and adds it there.  A
command raises AdminError (or a configuration or database error) to fail:
main() prints one line to stderr and exits with 1.  Usage errors exit with 2,
as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pymager_tx.adapters.sql.database import check_database_url
from pymager_tx.adapters.sql.schema_version import SchemaError, State, status_txn, upgrade_txn
from pymager_tx.admin.check import CHECK_COMMANDS
from pymager_tx.admin.command import AdminError, Command, Target
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError, Unavailable

T = TypeVar("T")
PROG = "pymager-admin"


def _db_upgrade(target: Target, _arguments: argparse.Namespace) -> int:
    before, after = target.transact(upgrade_txn, create=True)
    if before.state is State.EMPTY:
        print(f"{target.shown_url}: schema created at revision {after.revision}")
    elif before.revision == after.revision:
        print(f"{target.shown_url}: already at revision {after.revision}, the current one")
    else:
        print(f"{target.shown_url}: upgraded from revision {before.revision} to {after.revision}")
    return 0


def _db_current(target: Target, _arguments: argparse.Namespace) -> int:
    print(f"{target.shown_url}: {target.transact(status_txn).describe()}")
    return 0


DB_COMMANDS = [
    Command(
        ("db", "upgrade"),
        "bring the database schema to this pymager-tx's revision (creating it if empty)",
        _db_upgrade,
    ),
    Command(("db", "current"), "tell the database schema's revision", _db_current),
]


def commands() -> list[Command]:
    """Every subcommand of pymager-admin."""
    return [*DB_COMMANDS, *CHECK_COMMANDS]


def build_parser(available: Sequence[Command]) -> argparse.ArgumentParser:
    # The options every command takes, accepted after the command's words.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, help="TOML configuration file, as twistd pymager's")
    common.add_argument("-d", "--data-dir", help="directory of stored data; overrides [storage]")
    common.add_argument("--database-url", help="SQLAlchemy URL; overrides [database] url")

    parser = argparse.ArgumentParser(prog=PROG, description="Administer a pymager-tx database.")
    groups: dict[tuple[str, ...], Any] = {(): parser.add_subparsers(title="commands", required=True)}
    for command in available:
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                group = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{' '.join(prefix)} commands")
                groups[prefix] = group.add_subparsers(title="commands", required=True)
        leaf = groups[command.words[:-1]].add_parser(
            command.words[-1], parents=[common], help=command.help, description=command.help
        )
        if command.arguments is not None:
            command.arguments(leaf)
        leaf.set_defaults(command=command)
    return parser


def target_of(arguments: argparse.Namespace) -> Target:
    """The settings as twistd pymager would load them, and the database URL."""
    overrides: dict[str, dict[str, Any]] = {}
    if arguments.data_dir:
        overrides["storage"] = {"data_directory": arguments.data_dir}
    if arguments.database_url:
        try:
            check_database_url(arguments.database_url)
        except ValueError as error:
            raise AdminError(f"--database-url: {error}") from None
        overrides["database"] = {"url": arguments.database_url}
    settings = load_settings(arguments.config, overrides)
    # The same default as the service's (server.py).
    url = settings.database_url
    return Target(settings, url)


def main(argv: Sequence[str] | None = None, available: Sequence[Command] | None = None) -> int:
    arguments = build_parser(commands() if available is None else available).parse_args(argv)
    command: Command = arguments.command
    target: Target | None = None
    try:
        target = target_of(arguments)
        return command.run(target, arguments)
    except ConfigError as error:  # one problem a line: make them one line
        message = " ".join(str(error).split())
    except (AdminError, SchemaError, OSError) as error:
        message = str(error)
    except Unavailable as error:
        message = f"{error.detail} ({error.reason})"
    except SQLAlchemyError as error:
        cause = error.orig if isinstance(error, DBAPIError) else error
        where = target.shown_url if target is not None else "the database"
        message = f"{where}: {_first_line(str(cause))}"
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _first_line(message: str) -> str:
    # Drivers add hints on further lines; the first line says what failed.
    return next((line.strip() for line in message.splitlines() if line.strip()), message)


if __name__ == "__main__":
    sys.exit(main())
