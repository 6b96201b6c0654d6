"""The whole service with its images in a bucket (SeaweedFS in CI): what the
HTTP API promises holds on S3 as on files, and nothing stays behind."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest_twisted

from pymager_tx.adapters.storage.s3_client import make_client
from tests.conftest import S3Server
from tests.images import jpeg, opened
from tests.integration.conftest import start, stop


def objects(s3_server: S3Server, prefix: str) -> list[str]:
    client = make_client(s3_server.settings())
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket, Prefix=prefix)
        return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_upload_derive_delete_on_a_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    prefix = f"service-{uuid4().hex[:8]}"
    s3 = {"bucket": s3_server.bucket, "endpoint_url": s3_server.url, "prefix": prefix, "max_attempts": 2}
    if s3_server.access_key_id is not None:
        s3 |= {"access_key_id": s3_server.access_key_id, "secret_access_key": s3_server.secret_access_key}
    running = await start(tmp_path / "data", storage={"backend": "s3", "s3": s3})
    try:
        data = jpeg((400, 300))
        headers = {"Content-Type": "image/jpeg"}
        put = await running.request("PUT", "/original/photo", data=data, headers=headers)
        assert put.code == 201, await put.text()
        got = await running.request("GET", "/original/photo")
        assert got.code == 200 and await got.content() == data
        thumb = await running.request("GET", "/derived/photo-100x100.jpg")
        assert thumb.code == 200
        assert opened(await thumb.content()).size == (100, 100)
        stored = objects(s3_server, prefix)
        assert any(key.startswith(f"{prefix}/originals/") for key in stored)
        assert any(key.startswith(f"{prefix}/derived/") for key in stored)
        assert not any("photo" in key for key in stored)  # keys never hold the raw ID
        # Nothing under the data directory holds an image.
        assert not (tmp_path / "data" / "files").exists()

        ready = await running.request("GET", "/readyz")
        assert ready.code == 200, await ready.text()
        assert not any(key.startswith(f"{prefix}/probes/") for key in objects(s3_server, prefix))

        deleted = await running.request("DELETE", "/original/photo")
        assert deleted.code == 204
        assert (await running.request("GET", "/derived/photo-100x100.jpg")).code == 404
        assert objects(s3_server, prefix) == []
    finally:
        await stop(running)
