"""X-Accel-Redirect answers over HTTP: with [http] accel_redirect_prefix set,
a GET of an image answers its headers and the internal path of its file,
with no body; HEADs, 304s and refusals are as without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import immediate
from tests.images import jpeg
from tests.results import result_of
from tests.web.test_api import POLICY, TOKEN, Client, assert_problem, header

PREFIX = "/_pymager_files/"


def serving(database: Database, files: Path) -> tuple[Client, Client]:
    """Clients of the same service: with X-Accel-Redirect, and without."""
    blobs = FilesystemBlobStore(files, immediate)
    result_of(blobs.recover())
    service = ImageService(database, blobs, immediate, POLICY)
    tokens = WriteTokens((TOKEN,))
    accel = Client(ImageAPI(service, tokens, immediate, HttpPolicy(accel_redirect_prefix=PREFIX)), True)
    plain = Client(ImageAPI(service, tokens, immediate, HttpPolicy()), True)
    assert accel.put("/original/photo", jpeg((300, 200)), token=TOKEN).code == 201
    return accel, plain


@pytest.mark.parametrize("path", ["/original/photo", "/derived/photo-100x100.jpg"])
def test_a_get_names_the_file_for_nginx_and_sends_no_body(
    database: Database, tmp_path: Path, path: str
) -> None:
    client, plain = serving(database, tmp_path / "files")
    sent = plain.request("GET", path)
    read = client.request("GET", path)
    assert read.code == 200
    assert read.body == b""
    location = header(read, "X-Accel-Redirect")
    assert location is not None and location.startswith(PREFIX)
    # The file nginx is sent to is the one the service itself would send.
    assert (tmp_path / "files" / location.removeprefix(PREFIX)).read_bytes() == sent.body
    for name in ("ETag", "Last-Modified", "Cache-Control", "Content-Type", "X-Content-Type-Options"):
        assert header(read, name) == header(sent, name), name


def test_head_revalidation_and_refusals_stay_the_services(database: Database, tmp_path: Path) -> None:
    client, _ = serving(database, tmp_path / "files")
    read = client.request("GET", "/derived/photo-100x100.jpg")
    head = client.request("HEAD", "/derived/photo-100x100.jpg")
    assert head.code == 200 and header(head, "X-Accel-Redirect") is None
    assert header(head, "Content-Length") is not None
    etag = header(read, "ETag")
    assert etag is not None
    again = client.request("GET", "/derived/photo-100x100.jpg", headers={"If-None-Match": etag})
    assert again.code == 304 and header(again, "X-Accel-Redirect") is None
    assert_problem(client.request("GET", "/derived/nobody-100x100.jpg"), 404, "nobody")
    assert_problem(client.request("GET", "/derived/photo-101x100.jpg"), 403, "not allowed")


def test_a_lost_original_is_refused_not_redirected(database: Database, tmp_path: Path) -> None:
    client, _ = serving(database, tmp_path / "files")
    for original in (tmp_path / "files" / "originals").rglob("*"):
        if original.is_file():
            original.unlink()
    read = client.request("GET", "/original/photo")
    assert read.code != 200 and header(read, "X-Accel-Redirect") is None


def test_the_prefix_is_a_path_for_nginx_and_needs_the_filesystem_store() -> None:
    assert load_settings(overrides={"http": {"accel_redirect_prefix": PREFIX}}).http.accel_redirect_prefix
    for wrong in ("files", "/files", "/", "/a b/", "/x/../"):
        with pytest.raises(ConfigError):
            load_settings(overrides={"http": {"accel_redirect_prefix": wrong}})
    with pytest.raises(ConfigError, match="filesystem"):
        load_settings(
            overrides={
                "http": {"accel_redirect_prefix": PREFIX},
                "storage": {"backend": "s3", "s3": {"bucket": "images"}},
            }
        )
