"""The README's tables and examples say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from pymager_tx.config import documented_keys
from pymager_tx.core.problems import PROBLEMS

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_error_table_lists_every_problem_type_and_malformed_http() -> None:
    table = set(re.findall(r"^\| \d{3} \| `(/problems/[a-z-]+)` \|", README, re.MULTILINE))
    assert {f"/problems/{problem.slug}" for problem in PROBLEMS.values()} <= table
    # Sent by the channel for malformed HTTP, before any route or domain error.
    assert "/problems/bad-request" in table


def test_the_settings_table_names_log_format() -> None:
    assert "server.log_format" in documented_keys()
    assert "| `[server] log_format` |" in README


def test_the_revalidation_example_shows_the_headers_it_uses() -> None:
    example = README.split("# Revalidate", 1)[0].rsplit("# A derived image", 1)[1]
    assert "curl -D -" in example and "ETag:" in example


def test_every_admin_command_has_an_example() -> None:
    for command in ("import", "warm", "prune", "stats", "check", "db upgrade", "sign", "migrate-storage"):
        assert f"pymager-admin {command}" in README, command


def test_a_decoder_not_allowed_is_refused_saying_which_are() -> None:
    import pytest

    from pymager_tx.config import load_settings
    from pymager_tx.core.errors import ConfigError

    # PCX is a format Pillow reads: the refusal is the service's choice, not Pillow's lack.
    with pytest.raises(ConfigError) as refused:
        load_settings(None, {"images": {"decoders": ["JPEG", "PCX"]}})
    message = str(refused.value)
    assert "images.decoders: not decoders this service allows with this Pillow: PCX" in message
    assert "choose from JPEG, PNG, GIF" in message
    assert "eight this service allows" in documented_keys()["images.decoders"]
