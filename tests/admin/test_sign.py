"""`pymager-admin sign`, and `prune` beside signed sizes and sides of 0."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pymager_tx.admin.cli import cli
from tests.admin.conftest import Admin
from tests.admin.test_warm_prune_stats import renditions, stored

FIRST = "first-key-0123456789"
SECOND = "second-key-0123456789"
KEYS = f'[security]\nurl_signing_keys = ["{FIRST}", "{SECOND}"]\n'


def sign(tmp_path: Path, config: str, *names: str) -> Result:
    path = tmp_path / "pymager.toml"
    path.write_text(config)
    return CliRunner().invoke(cli, ["sign", *names, "-c", str(path)], catch_exceptions=False)


def expected(name: str, key: str) -> str:
    digest = hmac.new(key.encode("utf-8"), name.encode("utf-8"), hashlib.sha256).digest()
    return f"/derived/{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}/{name}"


def test_prints_the_signed_path_of_each_name_with_the_first_key(tmp_path: Path) -> None:
    result = sign(tmp_path, KEYS, "photo-640x0.webp", "photo-1280x720-fit.jpg")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        expected("photo-640x0.webp", FIRST),
        expected("photo-1280x720-fit.jpg", FIRST),
    ]
    assert FIRST not in result.output and SECOND not in result.output


def test_without_keys_there_is_nothing_to_sign_with(tmp_path: Path) -> None:
    result = sign(tmp_path, "", "photo-640x480.jpg")
    assert result.exit_code == 1
    assert (
        result.stderr == "pymager-admin: [security] url_signing_keys is empty: there is no key to sign with\n"
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("photo 640x480.jpg", "is named"),
        ("photo-0x0.jpg", "0x0"),
        ("photo-4097x100.jpg", "4096"),
        ("photo-4000x4000.jpg", "max_pixels"),
        ("photo-640x480.heic", "writes no 'heic'"),
    ],
)
def test_names_the_service_would_refuse_are_refused(tmp_path: Path, name: str, says: str) -> None:
    result = sign(tmp_path, KEYS + "[images]\nmax_pixels = 10000000\n", "photo-10x10.jpg", name)
    assert result.exit_code == 2
    assert says in result.stderr
    assert result.stdout == ""


def test_a_listed_size_is_signed_whatever_the_bounds(tmp_path: Path) -> None:
    config = KEYS + '[images]\nallowed_sizes = ["5000x100"]\n'
    assert sign(tmp_path, config, "photo-5000x100.png").stdout == expected("photo-5000x100.png", FIRST) + "\n"


def test_a_bad_key_stops_the_command_without_showing_it(tmp_path: Path) -> None:
    result = sign(tmp_path, '[security]\nurl_signing_keys = ["short-secret"]\n', "photo-10x10.jpg")
    assert result.exit_code == 1
    assert "security.url_signing_keys: a URL signing key is at least 16 characters" in result.stderr
    assert "short-secret" not in result.output


def test_prune_keeps_what_a_signed_url_may_ask_for(admin: Admin, tmp_path: Path) -> None:
    stored(admin, tmp_path, "a")
    admin.configure('[images]\nallowed_sizes = ["100x100", "300x0"]\n')
    assert admin("warm", "a", "--sizes", "100x100,300x0").exit_code == 0
    assert renditions(admin) == [("a", "100x100.jpeg"), ("a", "300x0.jpeg")]

    admin.configure(KEYS + '[images]\nallowed_sizes = ["100x100"]\nmax_signed_side = 200\n')
    dry = admin("prune")  # 300x0 is past max_signed_side: no URL asks for it any more
    assert dry.stdout.splitlines()[0].startswith("would remove: a 300x0.jpeg")
    assert dry.stdout.splitlines()[-1].startswith("1 renditions of sizes not allowed nor signable, ")

    admin.configure(KEYS + '[images]\nallowed_sizes = ["100x100"]\n')
    kept = admin("prune", "--apply")
    assert kept.stdout.splitlines() == ["removed 0 renditions, 0 bytes"]

    admin.configure('[images]\nallowed_sizes = ["100x100"]\n')
    assert admin("prune", "--apply").exit_code == 0
    assert renditions(admin) == [("a", "100x100.jpeg")]
