"""CORS over HTTP: answers to listed origins carry Access-Control-Allow-Origin,
preflights from them are answered so that browsers can upload with a token,
and nothing changes for anyone else or while [http] cors_origins is empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.http.cors import CorsPolicy
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import immediate
from tests.images import jpeg
from tests.web.test_api import POLICY, TOKEN, Client, header

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "PUT",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def serving(database: Database, *origins: str) -> Client:
    service = ImageService(database, MemoryBlobStore(), immediate, POLICY)
    policy = HttpPolicy(cors=CorsPolicy.of(origins, max_age=600))
    client = Client(ImageAPI(service, WriteTokens((TOKEN,)), immediate, policy), guarded=True)
    assert client.put("/original/photo", jpeg((300, 200)), token=TOKEN).code == 201
    return client


def vary(response: Any) -> list[str]:
    values = response.headers.getRawHeaders("Vary") or []
    return [name.strip() for value in values for name in value.split(",")]


def cors_headers(response: Any) -> dict[str, str]:
    return {
        name.decode().title(): values[0].decode()
        for name, values in response.headers.getAllRawHeaders()
        if name.lower().startswith(b"access-control-")
    }


def test_without_origins_nothing_changes(database: Database) -> None:
    client = serving(database)
    read = client.request("GET", "/original/photo", headers={"Origin": APP})
    assert read.code == 200
    assert cors_headers(read) == {}
    assert "Origin" not in vary(read)
    preflight = client.request("OPTIONS", "/original/photo", headers=PREFLIGHT)
    assert preflight.code == 405
    assert header(preflight, "Allow") == "DELETE, GET, HEAD, POST, PUT"
    assert cors_headers(preflight) == {}


def test_a_listed_origin_may_read_images_and_their_validators(database: Database) -> None:
    client = serving(database, APP, "http://localhost:3000")
    for path in ("/original/photo", "/derived/photo-100x100.jpg"):
        read = client.request("GET", path, headers={"Origin": APP})
        assert read.code == 200
        assert header(read, "Access-Control-Allow-Origin") == APP
        exposed = (header(read, "Access-Control-Expose-Headers") or "").split(", ")
        assert {"ETag", "Last-Modified", "Content-Range", "Location"} <= set(exposed)
        assert "Origin" in vary(read)
    # Refusals too, so that a script can read the problem document.
    missing = client.request("GET", "/original/nobody", headers={"Origin": "http://localhost:3000"})
    assert missing.code == 404
    assert header(missing, "Access-Control-Allow-Origin") == "http://localhost:3000"


def test_an_origin_not_listed_gets_no_cors_headers(database: Database) -> None:
    client = serving(database, APP)
    for headers in ({"Origin": OTHER}, {"Origin": "null"}, {}):
        read = client.request("GET", "/original/photo", headers=headers)
        assert read.code == 200
        assert cors_headers(read) == {}
        # The answer still depends on the Origin: caches must know.
        assert "Origin" in vary(read)
    preflight = client.request("OPTIONS", "/original/photo", headers={**PREFLIGHT, "Origin": OTHER})
    assert preflight.code == 405
    assert cors_headers(preflight) == {}


def test_a_preflight_lets_a_listed_origin_upload_with_a_token(database: Database) -> None:
    client = serving(database, APP)
    preflight = client.request("OPTIONS", "/original/upload", headers=PREFLIGHT)
    assert preflight.code == 204
    assert preflight.body == b""
    assert cors_headers(preflight) == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Methods": "DELETE, GET, HEAD, POST, PUT",
        "Access-Control-Allow-Headers": (
            "Authorization, Content-Type, If-Match, If-None-Match, If-Modified-Since, If-Range, Range"
        ),
        "Access-Control-Max-Age": "600",
    }
    assert "Origin" in vary(preflight)
    upload = client.put("/original/upload", jpeg((40, 30)), token=TOKEN, Origin=APP)
    assert upload.code == 201
    assert header(upload, "Access-Control-Allow-Origin") == APP
    derived = client.request("OPTIONS", "/derived/upload-100x100.auto", headers=PREFLIGHT)
    assert derived.code == 204
    assert header(derived, "Access-Control-Allow-Methods") == "GET, HEAD"


def test_only_preflights_for_served_paths_are_answered(database: Database) -> None:
    client = serving(database, APP)
    plain = client.request("OPTIONS", "/original/photo", headers={"Origin": APP})
    assert plain.code == 405  # no Access-Control-Request-Method: not a preflight
    assert client.request("OPTIONS", "/nothing/here", headers=PREFLIGHT).code == 404


def test_any_origin(database: Database) -> None:
    client = serving(database, "*")
    read = client.request(
        "GET", "/derived/photo-100x100.auto", headers={"Origin": OTHER, "Accept": "image/webp"}
    )
    assert header(read, "Access-Control-Allow-Origin") == "*"
    assert vary(read) == ["Accept"]  # the same answer for every origin
    preflight = client.request("OPTIONS", "/original/photo", headers={**PREFLIGHT, "Origin": OTHER})
    assert preflight.code == 204
    assert header(preflight, "Access-Control-Allow-Origin") == "*"
    assert cors_headers(client.request("GET", "/original/photo")) == {}  # no Origin: no CORS


def test_negotiated_answers_vary_on_both(database: Database) -> None:
    client = serving(database, APP)
    read = client.request(
        "GET", "/derived/photo-100x100.auto", headers={"Origin": APP, "Accept": "image/avif"}
    )
    assert header(read, "Content-Type") == "image/avif"
    assert sorted(vary(read)) == ["Accept", "Origin"]


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/", "https://app.example.com/path", "null", "ftp://x"],
)
def test_origins_are_checked_when_settings_load(tmp_path: Path, origin: str) -> None:
    path = tmp_path / "pymager.toml"
    path.write_text(f'[http]\ncors_origins = ["{origin}"]\n')
    with pytest.raises(ConfigError, match="cors_origins"):
        load_settings(path)


def test_listed_origins_load(tmp_path: Path) -> None:
    path = tmp_path / "pymager.toml"
    path.write_text('[http]\ncors_origins = ["https://App.example.com:8443", "http://[::1]:3000", "*"]\n')
    assert load_settings(path).http.cors_origins == ["https://App.example.com:8443", "http://[::1]:3000", "*"]
