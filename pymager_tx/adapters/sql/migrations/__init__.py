"""
The schema's history as Alembic revisions, shipped inside the package.

schema.py declares the current schema; these revisions are how a database
gets there from empty or from an earlier release (a test keeps the two in
agreement).  There is no alembic.ini: the configuration is built here, and
every command runs on a connection the caller already has in a transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

LOCATION = Path(__file__).parent


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for this package; env.py runs the migrations
    on `connection`, inside its transaction."""
    config = Config()
    config.set_main_option("script_location", str(LOCATION))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())
