"""`pymager-admin`: its database commands, its exit statuses and messages."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text

from pymager_tx.adapters.sql.database import make_engine, sqlite_url
from pymager_tx.adapters.sql.schema import originals
from pymager_tx.adapters.sql.schema_version import drop_txn
from pymager_tx.admin.cli import main
from tests.db.release_1 import create_release_1, insert_release_1_rows

HEAD = "0007"


def revision_at(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def admin(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_line_failure(result: tuple[int, str, str]) -> str:
    status, out, err = result
    assert (status, out) == (1, "")
    assert err.startswith("pymager-admin: ")
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def clean_url(database_url: str) -> Iterator[str]:
    """database_url with nothing in it, before and after the test."""
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as connection:
        drop_txn(connection)
    yield database_url
    with engine.begin() as connection:
        drop_txn(connection)
    engine.dispose()


def test_db_upgrade_creates_the_schema_then_finds_it_current(
    clean_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = admin(capsys, "db", "upgrade", "--database-url", clean_url)
    assert (status, err) == (0, "")
    assert out.endswith(f": schema created at revision {HEAD}\n")
    assert revision_at(clean_url) == HEAD

    status, out, _ = admin(capsys, "db", "upgrade", "--database-url", clean_url)
    assert status == 0
    assert out.endswith(f": already at revision {HEAD}, the current one\n")
    status, out, _ = admin(capsys, "db", "current", "--database-url", clean_url)
    assert status == 0
    assert out.endswith(f": at revision {HEAD}, current\n")


def test_db_upgrade_brings_a_first_release_database_up_with_its_rows(
    clean_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(clean_url, pool_size=1)
    try:
        with engine.begin() as connection:
            create_release_1(connection)
            insert_release_1_rows(connection)
        _, out, _ = admin(capsys, "db", "current", "--database-url", clean_url)
        assert out.endswith(f": at revision 0001, older than this pymager-tx ({HEAD})\n")

        status, out, _ = admin(capsys, "db", "upgrade", "--database-url", clean_url)

        assert status == 0
        assert out.endswith(f": upgraded from revision 0001 to {HEAD}\n")
        with engine.connect() as connection:
            assert connection.execute(select(originals.c.image_id, originals.c.owner)).all() == [
                ("photo", None)
            ]
    finally:
        engine.dispose()


def test_the_default_database_is_the_sqlite_file_in_the_configured_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text(f'[storage]\ndata_directory = "{tmp_path / "from-config"}"\n')

    assert admin(capsys, "db", "upgrade", "--config", str(config))[0] == 0
    assert revision_at(sqlite_url(tmp_path / "from-config" / "pymager.sqlite3")) == HEAD

    # --data-dir overrides the file, as with twistd pymager.
    assert admin(capsys, "db", "upgrade", "--config", str(config), "--data-dir", str(tmp_path / "x"))[0] == 0
    assert revision_at(sqlite_url(tmp_path / "x" / "pymager.sqlite3")) == HEAD


def test_database_url_overrides_the_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configured, given = tmp_path / "configured.sqlite3", tmp_path / "given.sqlite3"
    config = tmp_path / "pymager.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url(configured)}"\n')

    assert admin(capsys, "db", "upgrade", "-c", str(config), "--database-url", sqlite_url(given))[0] == 0
    assert given.exists()
    assert not configured.exists()


def test_a_bad_url_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_failure(admin(capsys, "db", "upgrade", "--database-url", "nonsense://somewhere"))
    assert "--database-url" in err


def test_an_unreachable_database_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: refused at once, no server needed.
    url = "postgresql+psycopg://pymager:secret@127.0.0.1:1/pymager"
    err = one_line_failure(admin(capsys, "db", "upgrade", "--database-url", url))
    assert "127.0.0.1:1" in err
    assert "secret" not in err


def test_a_bad_configuration_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text("[database]\npool_size = 0\nnot_a_key = 1\n")
    err = one_line_failure(admin(capsys, "db", "current", "--config", str(config)))
    assert "database.pool_size" in err
    assert "database.not_a_key" in err


def test_current_never_creates_a_sqlite_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_failure(admin(capsys, "db", "current", "--data-dir", str(tmp_path / "none")))
    assert "no database at" in err
    assert not (tmp_path / "none").exists()


def test_a_database_newer_than_the_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path / "pymager.sqlite3")
    assert admin(capsys, "db", "upgrade", "--database-url", url)[0] == 0
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()

    err = one_line_failure(admin(capsys, "db", "upgrade", "--database-url", url))
    assert "older than the database" in err
    assert revision_at(url) == "9999"


def test_a_usage_error_exits_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["db"])
    assert raised.value.code == 2
    assert "upgrade" in capsys.readouterr().err


def test_pymager_admin_runs_as_a_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pymager_tx.admin.cli", "db", "upgrade", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "schema created at revision" in done.stdout
    assert revision_at(sqlite_url(tmp_path / "data" / "pymager.sqlite3")) == HEAD

    refused = subprocess.run(
        [sys.executable, "-m", "pymager_tx.admin.cli", "db", "current", "--database-url", "nonsense://x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("pymager-admin: --database-url")


def test_check_finds_a_broken_store_and_repair_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert admin(capsys, "db", "upgrade", "--data-dir", data)[0] == 0
    assert admin(capsys, "check", "--data-dir", data)[0] == 0
    # A file no row refers to, as a crash or a hand could leave one.
    orphan = tmp_path / "data" / "files" / "originals" / "ab" / "cd" / "abcd" / "0123"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"junk")
    status, out, _ = admin(capsys, "check", "--data-dir", data)
    assert status == 1
    assert "orphan file: originals/ab/cd/abcd/0123" in out
    assert orphan.exists()
    status, out, _ = admin(capsys, "check", "--repair", "--data-dir", data)
    assert (status, out.splitlines()[-1]) == (0, "repaired")
    assert "repair: Removing orphan file originals/ab/cd/abcd/0123" in out.splitlines()
    assert not orphan.exists()
    assert admin(capsys, "check", "--data-dir", data)[0] == 0


def test_check_refuses_a_database_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = admin(capsys, "check", "--data-dir", str(tmp_path))
    assert status == 1 and err.startswith("pymager-admin: no database at")
