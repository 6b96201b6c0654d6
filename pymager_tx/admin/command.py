"""What every admin command is made of: the target it works on (settings
and the database they name), the options that name it, and the one error it
raises to fail with a one-line message."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Connection, Engine, make_url

from pymager_tx.adapters.sql.database import check_database_url, make_engine
from pymager_tx.config import Settings, load_settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class AdminError(Exception):
    """A command failed for a reason its message tells in one line."""


@dataclass(frozen=True)
class Target:
    """What a command works on: the settings and the database they name."""

    settings: Settings
    database_url: str

    @property
    def sqlite_path(self) -> Path | None:
        url = make_url(self.database_url)
        return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None

    @property
    def shown_url(self) -> str:
        return make_url(self.database_url).render_as_string(hide_password=True)

    def require_database(self) -> None:
        """Fail unless the SQLite file exists (a command never creates one by mistake)."""
        path = self.sqlite_path
        if path is not None and not path.exists():
            raise AdminError(f"no database at {path}")

    def transact(self, work: Callable[[Connection], T], *, create: bool = False) -> T:
        """Run work(connection) as one transaction; a SQLite file is created
        only if `create`."""
        path = self.sqlite_path
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not create:
            self.require_database()
        engine: Engine = make_engine(self.database_url, pool_size=1)
        try:
            # make_engine's SQLite transactions are BEGIN IMMEDIATE, as the service's writes.
            with engine.begin() as connection:
                return work(connection)
        finally:
            engine.dispose()


def target_of(config: Path | None, data_dir: str | None, database_url: str | None) -> Target:
    """The settings as twistd pymager would load them, and the database URL."""
    overrides: dict[str, dict[str, Any]] = {}
    if data_dir:
        overrides["storage"] = {"data_directory": data_dir}
    if database_url:
        try:
            check_database_url(database_url)
        except ValueError as error:
            raise AdminError(f"--database-url: {error}") from None
        overrides["database"] = {"url": database_url}
    settings = load_settings(config, overrides)
    return Target(settings, settings.database_url)


def with_target(command: F) -> F:
    """The options every command takes (--config, --data-dir, --database-url),
    given to the command as one Target; the context keeps it, so that a
    database failure can name the database."""

    @click.option(
        "-c",
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML configuration file, the one twistd pymager reads.",
    )
    @click.option(
        "-d",
        "--data-dir",
        help="Directory of stored data; overrides [storage] data_directory.",
    )
    @click.option("--database-url", help="SQLAlchemy URL; overrides [database] url.")
    @functools.wraps(command)
    def run(config: Path | None, data_dir: str | None, database_url: str | None, **options: Any) -> Any:
        target = target_of(config, data_dir, database_url)
        click.get_current_context().meta["pymager.target"] = target
        return command(target, **options)

    return run  # type: ignore[return-value]


def finish(status: int) -> None:
    """End the command with status (0 or 1)."""
    click.get_current_context().exit(status)
