"""`pymager-admin import --url` and `warm --url` against a real `twistd pymager`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pymager_tx.admin.cli import cli
from tests.images import BLUE, jpeg

TWISTD = str(Path(sys.executable).parent / "twistd")
TOKEN = "a-write-token-of-the-tests"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "pymager.toml"
    config.write_text(f'[server]\nlisten = "tcp:0:interface=127.0.0.1"\n[auth]\nwrite_tokens = ["{TOKEN}"]\n')
    process = subprocess.Popen(
        [
            TWISTD,
            "--nodaemon",
            "--logfile=-",
            "pymager",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "served"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                yield f"http://127.0.0.1:{found.group(1)}"
                break
        else:
            pytest.fail("twistd pymager ended before listening")
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_import_then_warm_through_the_http_api(server: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg((120, 90)))
    (folder / "b.jpg").write_bytes(jpeg((120, 90), BLUE))
    runner = CliRunner()

    first = runner.invoke(cli, ["import", str(folder), "--url", server, "--token", TOKEN, "--jobs", "2"])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1].startswith("2 imported, 0 already stored")

    (folder / "b.jpg").write_bytes(jpeg((120, 90)))  # other bytes under a stored ID
    again = runner.invoke(cli, ["import", str(folder), "--url", server, "--token", TOKEN])
    assert again.exit_code == 1
    assert again.stdout.splitlines()[-1].startswith("0 imported, 1 already stored, 1 conflicts, 0 failed")

    unauthorized = runner.invoke(cli, ["import", str(folder / "a.jpg"), "--url", server])
    # Skipped before any write is tried: reads need no token.
    assert unauthorized.exit_code == 0

    warmed = runner.invoke(cli, ["warm", "a", "b", "--sizes", "100x100,800x600", "--url", server])
    assert warmed.exit_code == 0, warmed.output
    assert warmed.stdout.splitlines()[-1].startswith("4 renditions derived or already there, 0 failed")
    refused = runner.invoke(cli, ["warm", "a", "--sizes", "101x100", "--url", server])
    assert refused.exit_code == 1
    assert "failed: a 101x100: " in refused.stdout
