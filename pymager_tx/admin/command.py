"""What every admin command is made of: the target it works on (settings
and the database they name), its description, and the one error it raises
to fail with a one-line message."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, make_url

from pymager_tx.adapters.sql.database import make_engine
from pymager_tx.config import Settings

T = TypeVar("T")


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

    def transact(self, work: Callable[[Connection], T], *, create: bool = False) -> T:
        """Run work(connection) as one transaction; a SQLite file is created
        only if `create`."""
        path = self.sqlite_path
        if path is not None:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise AdminError(f"no database at {path}")
        engine: Engine = make_engine(self.database_url, pool_size=1)
        try:
            # make_engine's SQLite transactions are BEGIN IMMEDIATE, as the service's writes.
            with engine.begin() as connection:
                return work(connection)
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    help: str
    run: Callable[[Target, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
