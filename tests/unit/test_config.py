from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pymager_tx.config import Settings, documented_keys, load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.core.model import Size

SAMPLE = Path(__file__).parents[2] / "etc" / "pymager.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pymager.toml"
    path.write_text(text)
    return path


def test_the_sample_loads_and_states_the_defaults() -> None:
    assert load_settings(SAMPLE) == Settings()


def test_the_sample_documents_every_key() -> None:
    text = SAMPLE.read_text()
    sections = tomllib.loads(text)
    for key in documented_keys():
        *tables, name = key.split(".")
        table = sections
        for part in tables:
            table = table.get(part, {})
        written = name in table or re.search(rf"^# {name} = ", text, re.MULTILINE)
        assert written, f"{key} is not in etc/pymager.toml"


def test_every_key_has_a_one_line_doc() -> None:
    for key, doc in documented_keys().items():
        assert doc and "\n" not in doc, key


def test_embedded_defaults() -> None:
    settings = load_settings()
    assert settings.server.listen == "tcp:8000:interface=127.0.0.1"
    assert settings.storage.data_directory == Path("pymager-data")
    assert settings.images.sizes == {Size(100, 100), Size(800, 600)}
    assert settings.http.cache_control == "public, max-age=86400"
    assert settings.auth.tokens() == ()


def test_overrides_win_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "tcp:9000"\n')
    settings = load_settings(path, {"server": {"listen": "tcp:9001"}, "storage": {"data_directory": "d"}})
    assert (settings.server.listen, settings.storage.data_directory) == ("tcp:9001", Path("d"))
    with pytest.raises(ConfigError, match=r"server\.dev_mode"):
        load_settings(None, {"server": {"dev_mode": "maybe"}})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nlisen = 'tcp:1'\n", r"server\.lisen: unknown setting"),
        ("[serve]\nlisten = 'tcp:1'\n", r"serve: unknown setting"),
        ("[images]\nallowed_sizes = ['100y100']\n", r"images\.allowed_sizes: a size is written WxH"),
        ("[images]\nallowed_sizes = []\n", r"images\.allowed_sizes"),
        ("[images]\nmax_pixels = 0\n", r"images\.max_pixels"),
        ("[images]\nmax_pixels = 100000000\n", r"images\.max_pixels"),
        ("[images]\njpeg_quality = 'high'\n", r"images\.jpeg_quality"),
        ("[images]\ndecoders = ['JPEG', 'PSD']\n", r"images\.decoders: not decoders .*: PSD"),
        ("[database]\npool_size = 0\n", r"database\.pool_size"),
        ('[http]\ncache_control = "a\\nb"\n', r"http\.cache_control"),
        ("[server]\npublic_url = 'ftp://x'\n", r"server\.public_url"),
        ("[auth]\nwrite_tokens = ['short']\n", r"auth\.write_tokens: a write token is at least 16"),
        ("images = 3\n", r"images"),
        # Strict types: no string, float or integer stands in for another type.
        ("[server]\ndev_mode = 'yes'\n", r"server\.dev_mode: Input should be a valid boolean"),
        ("[auth]\nallow_anonymous_writes = 1\n", r"auth\.allow_anonymous_writes"),
        ("[database]\npool_size = '4'\n", r"database\.pool_size"),
        ("[images]\nmax_upload_bytes = 1.0\n", r"images\.max_upload_bytes"),
        ("[server]\nidle_timeout = inf\n", r"server\.idle_timeout"),
        (
            "[images]\nallowed_sizes = ['20000x10']\n",
            r"allowed_sizes: 20000x10 is wider or taller than 16383",
        ),
        (
            "[images]\nallowed_sizes = ['9000x9000']\n",
            r"allowed_sizes: 9000x9000 has more pixels than max_pixels",
        ),
    ],
)
def test_bad_settings_name_their_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as raised:
        load_settings(write(tmp_path, text))
    assert str(tmp_path) in str(raised.value)


def test_a_bad_token_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, "[auth]\nwrite_tokens = ['secret but short']\n"))
    assert "secret" not in str(raised.value)


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nowhere.toml")


def test_tokens_from_a_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# deploy tokens\nfirst-token-0123456789\n\n  second-token-0123456789  \n")
    settings = load_settings(
        write(
            tmp_path, f"[auth]\nwrite_tokens = ['inline-token-0123456789']\nwrite_tokens_file = '{tokens}'\n"
        )
    )
    assert settings.auth.tokens() == (
        "inline-token-0123456789",
        "first-token-0123456789",
        "second-token-0123456789",
    )


def test_a_bad_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("short\n")
    settings = load_settings(write(tmp_path, f"[auth]\nwrite_tokens_file = '{tokens}'\n"))
    with pytest.raises(ConfigError, match=r"auth\.write_tokens_file, token 1"):
        settings.auth.tokens()
    missing = load_settings(write(tmp_path, f"[auth]\nwrite_tokens_file = '{tmp_path / 'none'}'\n"))
    with pytest.raises(ConfigError, match=r"auth\.write_tokens_file: cannot read"):
        missing.auth.tokens()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://bar", "not a usable SQLAlchemy URL"),
        ("not a url", "not a usable SQLAlchemy URL"),
        ("sqlite://", "in-memory SQLite"),
        ("mysql+nosuchdriver://u@h/db", "not a usable SQLAlchemy URL"),
    ],
)
def test_a_database_url_that_cannot_work_names_the_key(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"database\.url: .*{message}"):
        load_settings(None, {"database": {"url": url}})


def test_database_urls_of_installed_drivers() -> None:
    for url in ("postgresql://pymager@db.example/pymager", "sqlite:////var/lib/pymager/pymager.sqlite3"):
        assert load_settings(None, {"database": {"url": url}}).database.url == url


def test_the_sample_node_configuration_loads_as_written() -> None:
    settings = load_settings(Path(__file__).resolve().parents[2] / "etc" / "pymager-node.toml")
    assert settings.storage.backend == "s3"
    assert settings.cluster.liveness == "database"
    assert settings.database_url.startswith("postgresql")
