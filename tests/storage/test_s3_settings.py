"""[storage] backend and [storage.s3]: checked at start-up, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError

KEY_ID = "AKIAPYMAGERTESTKEY01"
SECRET = "pymager/test+secret0123456789abcdefghijkl"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pymager.toml"
    path.write_text(text)
    return path


def test_the_filesystem_is_the_default() -> None:
    settings = load_settings()
    assert settings.storage.backend == "filesystem"
    assert settings.storage.s3.access_key_id is None


def test_an_s3_store_from_the_file(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            '[storage]\nbackend = "s3"\n'
            '[storage.s3]\nbucket = "images"\nendpoint_url = "http://127.0.0.1:8333/"\n'
            f'prefix = "/pymager/"\naccess_key_id = "{KEY_ID}"\nsecret_access_key = "{SECRET}"\n',
        )
    )
    s3 = settings.storage.s3
    assert (settings.storage.backend, s3.bucket, s3.endpoint_url, s3.prefix) == (
        "s3",
        "images",
        "http://127.0.0.1:8333",
        "pymager",
    )
    assert s3.access_key_id is not None and s3.access_key_id.get_secret_value() == KEY_ID
    assert s3.secret_access_key is not None and s3.secret_access_key.get_secret_value() == SECRET


def test_credentials_are_never_shown(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "storage": {
                "backend": "s3",
                "s3": {"bucket": "images", "access_key_id": KEY_ID, "secret_access_key": SECRET},
            }
        },
    )
    for shown in (repr(settings), str(settings), repr(settings.storage.s3), settings.model_dump_json()):
        assert KEY_ID not in shown
        assert SECRET not in shown


@pytest.mark.parametrize(
    ("s3", "named"),
    [
        ({"secret_access_key": SECRET}, r"storage\.s3: access_key_id and secret_access_key go together"),
        ({"access_key_id": KEY_ID}, r"storage\.s3: access_key_id and secret_access_key go together"),
        ({"endpoint_url": f"http://{KEY_ID}:{SECRET}@127.0.0.1:8333"}, r"storage\.s3\.endpoint_url"),
        ({"endpoint_url": "ftp://127.0.0.1"}, r"storage\.s3\.endpoint_url"),
        ({"prefix": "../up"}, r"storage\.s3\.prefix"),
        ({"bucket": "no/slash"}, r"storage\.s3\.bucket"),
        ({"addressing_style": "dns"}, r"storage\.s3\.addressing_style"),
        ({"part_bytes": 1024}, r"storage\.s3\.part_bytes"),
        ({"max_pool_connections": 0}, r"storage\.s3\.max_pool_connections"),
        ({"read_timeout": 0}, r"storage\.s3\.read_timeout"),
        ({"access_key_id": 12345, "secret_access_key": SECRET}, r"storage\.s3\.access_key_id"),
        ({"buckett": "images"}, r"storage\.s3\.buckett: unknown setting"),
    ],
)
def test_bad_s3_settings_name_their_key_and_never_a_secret(s3: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as raised:
        load_settings(None, {"storage": {"s3": s3}})
    assert SECRET not in str(raised.value)
    assert KEY_ID not in str(raised.value)


def test_the_s3_backend_needs_a_bucket() -> None:
    with pytest.raises(ConfigError, match=r'storage: backend = "s3" needs \[storage.s3\] bucket'):
        load_settings(None, {"storage": {"backend": "s3"}})
    with pytest.raises(ConfigError, match=r"storage\.backend"):
        load_settings(None, {"storage": {"backend": "gcs"}})
