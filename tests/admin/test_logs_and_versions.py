"""`--version` on pymager-admin and twistd pymager; JSON log lines; no pid
file in the foreground."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions

from pymager_tx import __version__
from pymager_tx.admin.cli import cli, main
from pymager_tx.process import logs, tap

TWISTD = str(Path(sys.executable).parent / "twistd")


def test_pymager_admin_tells_its_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"pymager-tx {__version__}\n")
    assert main(["--version"]) == 0


def test_every_command_of_pymager_admin_has_whole_help() -> None:
    for words in (["check"], ["db", "upgrade"], ["import"], ["warm"], ["prune"], ["stats"]):
        result = CliRunner().invoke(cli, [*words, "--help"], terminal_width=200)
        assert result.exit_code == 0
        # The --data-dir help was cut off mid-sentence once.
        assert "Directory of stored data; overrides [storage] data_directory." in result.stdout
    listing = CliRunner().invoke(cli, ["--help"], terminal_width=80).stdout
    assert "..." not in listing.split("Commands:")[1]


def test_twistd_pymager_tells_pymager_tx_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        tap.Options().parseOptions(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"pymager-tx {__version__} (Twisted ")


def twistd_options(*arguments: str) -> ServerOptions:
    options = ServerOptions()
    options.parseOptions(list(arguments))
    return options


def test_json_logs_are_chosen_by_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text('[server]\nlog_format = "json"\n')
    chosen = twistd_options("--nodaemon", "pymager", "--config", str(config), "--data-dir", str(tmp_path))
    assert chosen["logger"] is logs.json_observer
    # A logger named on the command line wins.
    named = twistd_options(
        "--nodaemon", "--logger=twisted.logger.textFileLogObserver", "pymager", "--config", str(config)
    )
    assert named["logger"] is not logs.json_observer
    text = twistd_options("--nodaemon", "pymager", "--data-dir", str(tmp_path))
    assert text["logger"] is None


def test_no_pid_file_in_the_foreground_unless_named(tmp_path: Path) -> None:
    assert twistd_options("--nodaemon", "pymager", "--data-dir", str(tmp_path))["pidfile"] == ""
    named = twistd_options(
        "--nodaemon", f"--pidfile={tmp_path / 'p.pid'}", "pymager", "--data-dir", str(tmp_path)
    )
    assert named["pidfile"] == str(tmp_path / "p.pid")
    daemon = twistd_options("pymager", "--data-dir", str(tmp_path))
    assert daemon["pidfile"].endswith("twistd.pid")


def test_json_lines_carry_every_field_of_the_event() -> None:
    out = io.StringIO()
    publisher = LogPublisher(logs.json_lines(out))
    log = Logger(namespace="pymager_tx.http.access_log", observer=publisher)
    log.info("{method} {path} {status}", method="GET", path="/healthz", status=200, duration=0.001)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("Derivation of {name} failed", Failure(), name="a-100x100.jpg")

    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["method"] == "GET" and first["status"] == 200 and first["duration"] == 0.001
    assert first["log_text"] == "GET /healthz 200"
    assert first["log_level_name"] == "info"
    assert first["log_namespace"] == "pymager_tx.http.access_log"
    assert first["log_timestamp"].endswith("+00:00")
    assert second["log_level_name"] == LogLevel.critical.name
    assert second["name"] == "a-100x100.jpg"
    assert "ZeroDivisionError" in second["log_text"]


def test_twistd_pymager_logs_json_lines_and_leaves_no_pid_file(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text('[server]\nlog_format = "json"\nlisten = "tcp:0:interface=127.0.0.1"\n')
    process = subprocess.Popen(
        [TWISTD, "--nodaemon", "pymager", "--config", str(config), "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    events = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            events.append(json.loads(line))
            if "listening on" in events[-1]["log_text"]:
                break
        assert not (tmp_path / "twistd.pid").exists()
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert any("listening on" in event["log_text"] for event in events)
    assert all({"log_level_name", "log_timestamp", "log_namespace"} <= event.keys() for event in events)
