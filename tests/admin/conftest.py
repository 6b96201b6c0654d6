"""A data directory and database as the service leaves them, and
pymager-admin run on them through click's CliRunner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pymager_tx.adapters.sql.database import make_engine
from pymager_tx.adapters.sql.schema_version import drop_txn
from pymager_tx.admin.cli import cli


@dataclass
class Admin:
    """pymager-admin on one data directory and database."""

    data: Path
    database_url: str
    config: Path

    def __call__(self, *argv: str) -> Result:
        options = ["--data-dir", str(self.data), "--database-url", self.database_url, "-c", str(self.config)]
        return CliRunner().invoke(cli, [*argv, *options], catch_exceptions=False)

    def configure(self, text: str) -> None:
        self.config.write_text(text)


@pytest.fixture
def admin(tmp_path: Path, database_url: str) -> Iterator[Admin]:
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as connection:
        drop_txn(connection)
    config = tmp_path / "pymager.toml"
    config.write_text("")
    runner = Admin(tmp_path / "data", database_url, config)
    upgraded = runner("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    yield runner
    with engine.begin() as connection:
        drop_txn(connection)
    engine.dispose()
