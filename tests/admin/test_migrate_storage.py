"""`pymager-admin migrate-storage`: a data directory's files into a bucket
(SeaweedFS in CI), resumably, then the same store served from the bucket."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from pymager_tx.adapters.sql.database import sqlite_url
from pymager_tx.adapters.storage.s3_client import make_client
from tests.admin.conftest import Admin
from tests.conftest import S3Server
from tests.images import RED, jpeg, png
from tests.integration.cluster import toml


def s3_section(s3_server: S3Server, prefix: str, **changes: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"bucket": s3_server.bucket, "endpoint_url": s3_server.url, "prefix": prefix}
    if s3_server.access_key_id is not None:
        section |= {
            "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key,
        }
    return section | changes


def configure(admin: Admin, backend: str, s3: dict[str, Any]) -> None:
    admin.configure(
        toml(
            {
                "storage": {"backend": backend},
                "storage.s3": s3,
                "images": {"allowed_sizes": ["100x100", "200x150"]},
            }
        )
    )


def files_of(data: Path) -> dict[str, bytes]:
    root = data / "files"
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".tmp" not in path.relative_to(root).parts
    }


def bucket_of(s3_server: S3Server, prefix: str) -> dict[str, bytes]:
    client = make_client(s3_server.settings())
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket, Prefix=prefix + "/")
        names = [entry["Key"] for page in pages for entry in page.get("Contents", [])]
        return {
            name[len(prefix) + 1 :]: client.get_object(Bucket=s3_server.bucket, Key=name)["Body"].read()
            for name in names
        }
    finally:
        client.close()


def on_sqlite(tmp_path: Path) -> Admin:
    data = tmp_path / "data"
    return Admin(data, sqlite_url(data / "pymager.sqlite3"), tmp_path / "pymager.toml")


@pytest.fixture
def single_machine(tmp_path: Path) -> Admin:
    """A single-machine store on SQLite and files, with originals, renditions
    and a working copy, as `twistd pymager` leaves it."""
    admin = Admin(
        tmp_path / "data", sqlite_url(tmp_path / "data" / "pymager.sqlite3"), tmp_path / "pymager.toml"
    )
    admin.configure(toml({"images": {"allowed_sizes": ["100x100", "200x150"]}}))
    assert admin("db", "upgrade").exit_code == 0
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "large.jpg").write_bytes(jpeg((3000, 2000), RED))  # derived from a working copy
    (folder / "small.png").write_bytes(png((300, 200)))
    assert admin("import", str(folder)).exit_code == 0
    warmed = admin("warm", "--sizes", "100x100", "--all")
    assert warmed.exit_code == 0, warmed.output
    return admin


def test_a_store_is_copied_whole_then_only_what_is_missing(
    single_machine: Admin, s3_server: S3Server
) -> None:
    admin, prefix = single_machine, f"migrated-{uuid4().hex[:8]}"
    files = files_of(admin.data)
    assert len(files) == 5  # two originals, two renditions, the large one's working copy
    configure(admin, "filesystem", s3_section(s3_server, prefix))

    first = admin("migrate-storage", "--jobs", "3")

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1].startswith("5 copied (")
    assert ", 0 already there, 0 removed meanwhile, 0 failed, of 5 objects into bucket " in first.stdout
    assert "migrate-storage: 5/5 (100%)" in first.stderr  # not a terminal: plain lines
    assert bucket_of(s3_server, prefix) == files
    assert files_of(admin.data) == files  # the source only read

    # Interrupted or outdated: what the bucket lacks, or holds at another
    # size, is copied; the rest is left.
    client = make_client(s3_server.settings())
    missing, damaged = sorted(files)[:2]
    client.delete_object(Bucket=s3_server.bucket, Key=f"{prefix}/{missing}")
    client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/{damaged}", Body=b"cut short")
    client.close()
    again = admin("migrate-storage")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1].startswith("2 copied (")
    assert ", 3 already there," in again.stdout
    assert bucket_of(s3_server, prefix) == files

    # Switched over: the same database, its images in the bucket.
    configure(admin, "s3", s3_section(s3_server, prefix))
    checked = admin("check")
    assert checked.exit_code == 0, checked.output
    assert "consistent" in checked.stdout
    assert admin("stats").exit_code == 0


def test_keys_that_fail_are_listed_and_exit_with_1(single_machine: Admin, s3_server: S3Server) -> None:
    nothing = socket.socket()
    nothing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        port = nothing.getsockname()[1]
        unreachable = {"endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1, "connect_timeout": 1.0}
        configure(single_machine, "filesystem", s3_section(s3_server, "nowhere", **unreachable))
        result = single_machine("migrate-storage")
    finally:
        nothing.close()
    assert result.exit_code == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 5
    assert all("the image storage is failing" in line for line in failed)
    assert failed[0].startswith("failed: derived/") or failed[0].startswith("failed: originals/")
    assert "0 copied (0 bytes), 0 already there, 0 removed meanwhile, 5 failed, of 5 objects" in result.stdout
    assert (s3_server.secret_access_key or "no secret") not in result.output


def test_without_a_bucket_or_a_store_it_says_so(tmp_path: Path) -> None:
    admin = Admin(
        tmp_path / "data", sqlite_url(tmp_path / "data" / "pymager.sqlite3"), tmp_path / "pymager.toml"
    )
    admin.configure("")
    result = admin("migrate-storage")
    assert result.exit_code == 1
    assert "[storage.s3] names no bucket" in result.stderr
    admin.configure(toml({"storage.s3": {"bucket": "images"}}))
    result = admin("migrate-storage")
    assert result.exit_code == 1
    assert f"no filesystem store at {tmp_path / 'data' / 'files'}" in result.stderr
